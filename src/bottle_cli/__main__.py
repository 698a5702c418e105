from bottle_cli.app import main

main()
