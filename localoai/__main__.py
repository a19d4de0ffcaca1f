from localoai.cli import main

raise SystemExit(main())
