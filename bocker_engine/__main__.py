from bocker_engine.cli import main

main()
