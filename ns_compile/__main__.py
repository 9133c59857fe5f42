from ns_compile.cli import main

main()
