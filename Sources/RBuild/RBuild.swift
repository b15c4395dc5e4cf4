import RBuildRuntime
public enum RBuildLibrary {}
