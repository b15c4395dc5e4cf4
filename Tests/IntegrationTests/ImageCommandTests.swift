import Foundation
import Testing

@Suite("image commands, as an unprivileged user", .enabled(if: Env.enabled))
struct ImageCommandTests {
    @Test func importSaveLoadRoundTrip() throws {
        let fs = try Rootfs()
        let arm = try Rootfs(arch: "arm64")
        let root = ["--root", fs.dir + "/state"]
        var env = ProcessInfo.processInfo.environment
        env["SOURCE_DATE_EPOCH"] = "1700000000"

        let a = try rbuild(["import"] + root + [fs.path, "demo:1"], environment: env)
        #expect(a.status == 0, "\(a.stderr)")
        let b = try rbuild(["import"] + root + ["--platform", "linux/arm64", arm.path, "demo:1"], environment: env)
        #expect(b.status == 0, "\(b.stderr)")
        let images = try rbuild(["images"] + root)
        #expect(images.stdout.contains("demo:1") && images.stdout.contains("linux/amd64,linux/arm64"), "\(images.stdout)")

        let inspect = try rbuild(["inspect"] + root + ["--platform", "linux/arm64", "demo:1"])
        let json = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any]
        #expect((json?["config"] as? [String: Any])?["architecture"] as? String == "arm64")

        // Reproducible: the same files imported again (elsewhere) give the same image digest.
        let again = try rbuild(["import", "--root", fs.dir + "/state2", fs.path, "demo:1"], environment: env)
        #expect(again.stdout.split(separator: " ")[2] == a.stdout.split(separator: " ")[2])

        let archive = fs.dir + "/demo.tar"
        #expect(try rbuild(["save"] + root + ["demo:1", "-o", "type=oci,dest=\(archive)"]).status == 0)
        let skopeo = try runProcess("/usr/bin/skopeo", ["inspect", "--raw", "oci-archive:\(archive):1"])
        #expect(skopeo.status == 0 && skopeo.stdout.contains("arm64"), "\(skopeo.stderr)")
        let docker = try rbuild(["save"] + root + ["demo:1", "-o", "type=docker,dest=\(fs.dir)/d.tar"])
        #expect(docker.status == 1)
        #expect(docker.stderr.contains("docker archives hold one platform"), "\(docker.stderr)")

        let load = try rbuild(["load", "--root", fs.dir + "/other", archive + ":1", "copy:2"])
        #expect(load.status == 0, "\(load.stderr)")
        #expect(load.stdout.hasPrefix("Loaded copy:2"))
        #expect(try rbuild(["rmi", "--root", fs.dir + "/other", "copy:2"]).status == 0)
        let prune = try rbuild(["prune", "--root", fs.dir + "/other"])
        #expect(prune.stdout.hasPrefix("Deleted 7 blobs"), "\(prune.stdout)")  // index, 2 manifests, 2 configs, 2 layers
        let missing = try rbuild(["inspect", "--root", fs.dir + "/other", "copy:2"])
        #expect(missing.status == 1)
        #expect(missing.stderr == "rbuild: no such image: copy:2 (see `rbuild images`)\n")
    }
}
