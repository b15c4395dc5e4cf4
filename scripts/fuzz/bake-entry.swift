// libFuzzer entry point for the bake file readers: the fuzzer's bytes are read by `Bake.load` as an
// HCL file, as a JSON file and as a compose file (the reader is chosen by the file's name, so each
// input goes through all three). A definition that loads is resolved for its default names and for
// every target and group it defines, `--print`ed for both (the output must be JSON that
// JSONSerialization parses, with a "target" object), listed (`--list`), and loaded again with
// `--set` overrides. Any crash, hang, leak or broken property is a bug. Built by scripts/fuzz/bake.
import Foundation
import RBuildBake

/// As `rbuild bake` might see it: variables the seeds use, overridden from the environment.
let environment = ["TAG": "v1", "PUSH": "true", "JOBS": "3", "PLATFORMS": "linux/amd64,linux/arm64", "N": "2"]
let overrides = ["*.platform=linux/arm64", "*.args.X=1", "*.tags+=extra:1", "*.no-cache=true"]

func printed(_ d: BakeDefinition, _ names: [String], _ file: String) {
    guard let out = try? d.printJSON(names) else { return }
    check(out.last == UInt8(ascii: "\n"), "\(file): --print \(names) does not end with a newline")
    guard let top = try? JSONSerialization.jsonObject(with: Data(out)) as? [String: Any] else {
        fail("\(file): --print \(names) is not a JSON object: \(String(decoding: out, as: UTF8.self))")
    }
    check(top["target"] is [String: Any], "\(file): --print \(names) has no \"target\" object: \(String(decoding: out, as: UTF8.self))")
}

func exercise(_ name: String, _ bytes: [UInt8]) {
    let file = BakeFile(name: name, contents: bytes)
    guard let d = try? Bake.load([file], environment: environment) else { return }
    let all = d.groups.keys.sorted() + d.targets.keys.sorted()
    for names in [[], all] {
        if let ts = try? d.resolve(names) {
            check(ts.allSatisfy { d.targets[$0.name] != nil }, "\(name): resolve \(names) gives a target the definition does not hold")
        }
        printed(d, names, name)
    }
    _ = (d.listTargets(), d.listVariables())
    if !d.targets.isEmpty, let o = try? Bake.load([file], environment: environment, overrides: overrides) {
        printed(o, all, name)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    exercise("docker-bake.hcl", bytes)
    exercise("docker-bake.json", bytes)
    exercise("compose.yaml", bytes)
    return 0
}
