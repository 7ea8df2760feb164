from procview.cli import main

main()
