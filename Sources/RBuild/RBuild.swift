// The embedding API. Programs that embed rbuild import this module only (API.swift names what
// it offers from the modules below).
import Foundation
import RBuildDockerfile
import RBuildExporters
import RBuildOCI
import RBuildRegistry
import RBuildRuntime
import RBuildSnapshots
import RBuildSolver
import RBuildSystem
