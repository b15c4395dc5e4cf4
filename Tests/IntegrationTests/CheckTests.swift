import Foundation
import Testing

@Suite("rbuild build --check", .enabled(if: Env.enabled))
struct CheckTests {
    func write(_ text: String) throws -> (dir: String, file: String) {
        let dir = NSTemporaryDirectory() + "rbuild-check-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try text.write(toFile: dir + "/Dockerfile", atomically: false, encoding: .utf8)
        return (dir, dir + "/Dockerfile")
    }

    @Test func warningsAreListedWithTheirLine() throws {
        let (dir, _) = try write("FROM busybox as Build\nCMD echo hi\n")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try rbuild(["build", "--check", dir])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("WARN: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (Dockerfile:1)"))
        #expect(r.stdout.contains("WARN: StageNameCasing: Stage name 'Build' should be lowercase (Dockerfile:1)"))
        #expect(r.stdout.contains("WARN: JSONArgsRecommended:"))
        #expect(r.stdout.contains("Check complete, 3 warnings found."))
    }

    @Test func errorsExitNonZero() throws {
        let (dir, file) = try write("FROM busybox\nCOPY --form=x a b\n")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try rbuild(["build", "--check", "-f", file, dir])
        #expect(r.status == 1)
        #expect(r.stderr == "rbuild: Dockerfile:2:1: unknown flag: --form (did you mean --from?)\n")

        let (dir2, _) = try write("# check=error=true\nFROM busybox\nCMD echo\n")
        defer { try? FileManager.default.removeItem(atPath: dir2) }
        let promoted = try rbuild(["build", "--check", dir2])
        #expect(promoted.status == 1)
        #expect(promoted.stdout.contains("ERROR: JSONArgsRecommended"))
    }

    @Test func cleanFileAndMissingFile() throws {
        let (dir, _) = try write("FROM busybox\nCMD [\"sh\"]\n")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try rbuild(["build", "--check", dir])
        #expect(r.status == 0)
        #expect(r.stdout.trimmingCharacters(in: .newlines) == "Check complete, no warnings found.")
        let missing = try rbuild(["build", "--check", dir + "/nope"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("cannot read the Dockerfile"))
    }
}
