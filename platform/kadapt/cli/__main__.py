from kadapt.cli import main

main()
