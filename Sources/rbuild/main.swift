import RBuildCLI

RBuildCommand.runMain()
