import CRBuildChild
public enum Runtime {}
