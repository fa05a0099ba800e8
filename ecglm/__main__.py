from ecglm.cli import main

raise SystemExit(main())
