import Testing
@testable import RBuildDockerfile
