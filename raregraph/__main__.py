from raregraph.cli import main

main()
