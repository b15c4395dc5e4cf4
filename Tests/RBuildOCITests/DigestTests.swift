import Foundation
import Testing
import RBuildSystem
@testable import RBuildOCI

struct DigestTests {
    @Test func hashesLikeSha256sum() {
        #expect(Digest.of(Array("hello\n".utf8)).description == "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
        #expect(Digest.of([]).description == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test(arguments: [
        ("sha512:" + String(repeating: "a", count: 128), "unsupported digest algorithm sha512"),
        ("sha256:abc", "64 lowercase hex digits"),
        ("sha256:" + String(repeating: "A", count: 64), "64 lowercase hex digits"),
        ("nocolon", "expected sha256:<64 hex digits>"),
        ("sha256:" + String(repeating: "a", count: 63) + "g", "64 lowercase hex digits"),
        ("sha256:" + String(repeating: "a", count: 65), "64 lowercase hex digits"),
        ("sha256:" + String(repeating: "a", count: 64) + "\n", "64 lowercase hex digits"),
        ("sha256:" + String(repeating: "a", count: 63) + "é", "64 lowercase hex digits"),
        ("SHA256:" + String(repeating: "a", count: 64), "unsupported digest algorithm SHA256"),
    ])
    func rejects(_ text: String, _ message: String) {
        do {
            _ = try Digest(parsing: text)
            Issue.record("accepted \(text)")
        } catch let e as OCIError {
            #expect(e.message.contains(message), "\(e.message)")
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test func parsesWhatItPrints() throws {
        let d = Digest.of([1, 2, 3])
        #expect(try Digest(parsing: d.description) == d)
        var text = d.description
        #expect(text.withUTF8 { Digest(utf8: $0) } == d)
        #expect(Digest(utf8: UnsafeBufferPointer(start: nil, count: 0)) == nil)
    }

    @Test func roundTripsThroughJSON() throws {
        let d = Digest.of([1, 2, 3])
        let back = try JSONDecoder().decode([Digest].self, from: JSONEncoder().encode([d]))
        #expect(back == [d])
    }
}

struct PlatformTests {
    @Test(arguments: [
        ("linux/amd64", "linux/amd64"), ("linux/x86_64", "linux/amd64"), ("arm64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"), ("linux/aarch64", "linux/arm64"), ("linux/arm", "linux/arm/v7"),
        ("linux/arm/v6", "linux/arm/v6"), ("linux/386", "linux/386"), ("linux/riscv64", "linux/riscv64"),
        ("linux/ppc64le", "linux/ppc64le"), ("linux/s390x", "linux/s390x"),
    ])
    func normalises(_ text: String, _ expected: String) throws {
        #expect(try Platform(parsing: text).description == expected)
    }

    @Test(arguments: ["linux/", "linux/pdp11", "a/b/c/d", ""])
    func rejects(_ text: String) {
        #expect(throws: PlatformError.self) { try Platform(parsing: text) }
    }
}
