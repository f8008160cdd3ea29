"""One module per CLI subcommand. Each exposes `register(subparsers)` (adds its parser
and sets `func`) and keeps the work in the library, so notebooks can call it too."""
