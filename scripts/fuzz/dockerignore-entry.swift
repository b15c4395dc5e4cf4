// libFuzzer entry point for .dockerignore rules, driven with paths as a context walk drives them.
// The fuzzer's text is a .dockerignore file, then (after a NUL byte) paths, one per line; without
// a NUL, a few usual paths and the file's own lines are the paths. Each path is matched; a
// directory `canSkipDirectory` allows skipping must have every path below it excluded (else a
// walk would lose files an exception keeps); the rules written back (`line`) must read the same.
// Any crash, hang, leak or broken property is a bug. Built by scripts/fuzz/dockerignore.
import RBuildSystem

let usualPaths = ["a", "a/b/c.txt", "node_modules/x/index.js", ".git/HEAD", "src/main.go", "build/keep.txt", "x.log", "dir/sub/x"]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = inputText(data, size)
    let parts = text.split(separator: "\0", maxSplits: 1, omittingEmptySubsequences: false)
    let rules = DockerIgnore(String(parts[0]))
    var paths = parts.count > 1 ? parts[1].split(separator: "\n").map(String.init)
        : usualPaths + parts[0].split(separator: "\n").map(String.init)
    paths = Array(paths.prefix(16))

    let written = DockerIgnore(rules.patterns.map(\.line).joined(separator: "\n"))
    check(written == rules, "the rules written back read differently: \(rules.patterns.map(\.line))")

    for path in paths {
        let excluded = rules.matches(path)
        guard rules.canSkipDirectory(path) else { continue }
        check(excluded, "\(path) can be skipped but is not excluded")
        // (A child with `..` may name a path outside the directory; split by bytes, as a `/`
        // and a combining mark after it are one Character.)
        for child in paths where !child.utf8.split(separator: UInt8(ascii: "/")).contains(where: { $0.elementsEqual("..".utf8) }) {
            check(rules.matches(path + "/" + child), "\(path) can be skipped, but \(path)/\(child) is not excluded")
        }
    }
    return 0
}
