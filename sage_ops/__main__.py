from sage_ops.cli import main

main()
