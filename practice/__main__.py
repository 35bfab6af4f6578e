"""python -m practice [DIR]: write the exercise folder (default: exercises)."""

from practice.exercises import main

raise SystemExit(main())
