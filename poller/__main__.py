from poller.main import main

main()
