from bottle_cli.app import main

raise SystemExit(main())
