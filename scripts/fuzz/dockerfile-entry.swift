// libFuzzer entry point for the Dockerfile frontend: parse, type, lint and expand whatever
// bytes the fuzzer makes. Any crash or hang is a bug. Built by scripts/fuzz/dockerfile.
import RBuildDockerfile
import RBuildSystem

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = inputText(data, size)
    guard let df = try? Dockerfile.parse(text) else { return 0 }
    _ = df.dump()
    _ = try? df.definition()
    let lexer = ShellLexer(escape: df.escapeToken)
    for node in df.nodes {
        for w in node.words { _ = try? lexer.expand(w, env: ["A": "x y", "B": ""]) }
    }
    let host = Platform(os: "linux", architecture: "amd64")
    _ = try? Linter.check(df, context: ExpansionContext(buildArgs: ["A": "1"], buildPlatform: host))
    _ = DockerIgnore(text).matches("a/b/c.txt")
    return 0
}
