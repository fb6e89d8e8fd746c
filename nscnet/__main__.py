from nscnet.cli import main

raise SystemExit(main())
