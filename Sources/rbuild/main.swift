import RBuildCLI
RBuildCommand.main()
