from gfvc.cli import main

main()
