import ArgumentParser
import Foundation
import RBuild

struct PullCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pull", abstract: "Pull an image from a registry into the local store.")

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "Platforms to pull, comma-separated (default: the host's).")
    var platform: String?

    @Argument(help: "REF: busybox, localhost:5000/app:1, ghcr.io/org/app@sha256:…")
    var reference: String

    func run() throws {
        let store = try StateDirectory.open(global.root)
        let ref = try Reference(parsing: reference)
        let platforms = try platform.map { try $0.split(separator: ",").map { try Platform(parsing: String($0)) } }
        let d = try Distribution.pull(ref, platforms: platforms, store: store)
        print("\(ref) \(d.digest)")
    }
}

struct PushCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "push", abstract: "Push a local image to a registry (layers gzip-compressed).")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The local image.")
    var name: String

    @Argument(help: "Where to push it (default: NAME).")
    var reference: String?

    func run() throws {
        let store = try StateDirectory.open(global.root)
        let full = try ImageStore.normalise(name)
        guard let top = try store.lookup(full) else { throw OCIError(.notFound, "no such image: \(full) (see `rbuild images`)") }
        let ref = try Reference(parsing: reference ?? full)
        let cache = try CacheIndex(path: store.layout.cacheIndex)
        let image = try compressedImage(top, compression: .gzip, level: nil, store: store, cache: cache)
        // An image named in the same registry (pulled from it, or pushed there before): the
        // registry is asked to mount its blobs from that repository instead of receiving them.
        var mountFrom: String?
        if let source = try? Reference(parsing: full), source.registry == ref.registry, source.repository != ref.repository {
            mountFrom = source.repository
        }
        let digest = try Distribution.push(image, to: ref, store: store, mountFrom: mountFrom) { line in
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
        print("\(ref) \(digest)")
    }
}

struct LoginCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "login", abstract: "Store credentials for a registry (in $DOCKER_CONFIG/config.json, as docker does).")

    @Option(name: [.short, .long], help: "User name.")
    var username: String

    @Flag(name: .customLong("password-stdin"), help: "Read the password from stdin.")
    var passwordStdin = false

    @Option(name: [.short, .long], help: "The password (prefer --password-stdin).")
    var password: String?

    @Argument(help: "The registry, e.g. localhost:5000.")
    var registry: String

    func run() throws {
        var secret = password ?? ""
        if passwordStdin {
            secret = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
                .trimmingCharacters(in: .newlines)
        }
        guard !secret.isEmpty else { throw ValidationError("no password: pass --password-stdin (or -p)") }
        let ref = try Reference(parsing: registry + "/rbuild-login-check")
        let creds = Credentials(username: username, password: secret)
        try RegistryClient(registry: ref, credentials: creds).checkLogin()
        try Credentials.store(creds, for: ref.registry)
        print("Login Succeeded")
    }
}

struct LogoutCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logout", abstract: "Remove the stored credentials of a registry.")

    @Argument(help: "The registry.")
    var registry: String

    func run() throws {
        let ref = try Reference(parsing: registry + "/x")
        print(try Credentials.remove(for: ref.registry) ? "Removing login credentials for \(ref.registry)" : "Not logged in to \(ref.registry)")
    }
}

extension RegistryError: RenderableError { var exitStatus: Int32 { 1 } }
