from procview.entry import main

main()
