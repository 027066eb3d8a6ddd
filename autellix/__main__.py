from autellix.cli import main

raise SystemExit(main())
