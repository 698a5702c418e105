from bottle_cli.quick import main

raise SystemExit(main())
