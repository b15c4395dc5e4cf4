// The embedding API. Programs that embed rbuild import this module only; it re-exports the
// runtime's public types (SandboxSpec, Sandbox, HostReport…) so that they need nothing else.
@_exported import RBuildRuntime
@_exported import RBuildSystem
