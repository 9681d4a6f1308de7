from eventmgmt.cli import main

raise SystemExit(main())
