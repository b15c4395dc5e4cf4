// libFuzzer entry point for image references and platform strings, as FROM, --platform, pull,
// push and tag read them: the fuzzer's text is parsed by `Reference(parsing:)` and
// `Platform(parsing:)`. A reference that parses must print in the distribution grammar
// (github.com/distribution/reference, with its registry always spelt) and parse back to itself;
// a platform likewise, and it is matched against an index's entries as a wanted platform. Any
// crash, hang, leak or broken property is a bug. Built by scripts/fuzz/reference.
import Foundation
import RBuildOCI
import RBuildRegistry
import RBuildSystem

/// distribution/reference's grammar (regexp.go), ASCII only, the domain required, as a POSIX
/// extended regex (Foundation's NSRegularExpression and Swift's Regex leak under LeakSanitizer).
let grammar: UnsafeMutablePointer<regex_t> = {
    let component = "([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    let host = "(\(component)(\\.\(component))*|\\[[a-fA-F0-9:]+\\])"
    let path = "[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
    let pattern = "^\(host)(:[0-9]+)?/\(path)(/\(path))*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
    let re = UnsafeMutablePointer<regex_t>.allocate(capacity: 1)
    guard regcomp(re, pattern, REG_EXTENDED | REG_NOSUB) == 0 else { fail("the grammar does not compile") }
    return re
}()

func inGrammar(_ s: String) -> Bool { !s.utf8.contains(0) && regexec(grammar, s, 0, nil, 0) == 0 }

/// An index's entries, as a registry lists them.
let entries = ["linux/amd64", "linux/arm64/v8", "linux/arm/v6", "linux/arm/v7", "linux/386", "linux/amd64/v3"].enumerated().map { i, p in
    Descriptor(mediaType: MediaType.ociManifest, digest: Digest.of([UInt8(i)]), size: 1, platform: try! Platform(parsing: p))
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = inputText(data, size)
    if let r = try? Reference(parsing: text) {
        let printed = r.description
        check(inGrammar(printed),
              "\(text) parses to \(printed), outside the reference grammar")
        check((try? Reference(parsing: printed)) == r, "\(text) parses to \(printed), which does not parse back to it")
        _ = (r.manifestReference, r.apiHost, r.usesPlainHTTP)
    }
    if let p = try? Platform(parsing: text) {
        check((try? Platform(parsing: p.description)) == p, "platform \(text) prints as \(p), which does not parse back to it")
        check(p.normalized.normalized == p.normalized, "platform \(p) normalises differently twice")
        _ = PlatformMatcher(p).best(entries)
    }
    return 0
}
