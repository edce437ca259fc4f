from layerdrop.cli import main

raise SystemExit(main())
