import Foundation
import RBuildSystem

/// Registry credentials as docker keeps them: `$DOCKER_CONFIG/config.json` (else
/// `~/.docker/config.json`) with `auths` (base64 `user:password`), `credHelpers` and
/// `credsStore` (the `docker-credential-NAME` programs).
public struct Credentials: Sendable {
    public var username: String
    public var password: String

    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    public static var configPath: String {
        let env = ProcessInfo.processInfo.environment
        let dir = env["DOCKER_CONFIG"] ?? (homeDirectory() + "/.docker")
        return dir + "/config.json"
    }

    static func loadConfig() -> [String: Any] {
        guard let data = FileManager.default.contents(atPath: configPath),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [:] }
        return json
    }

    /// The keys docker may have used for `registry` in `auths`.
    static func keys(_ registry: String) -> [String] {
        registry == "docker.io" ? ["https://index.docker.io/v1/", "docker.io", "index.docker.io", "registry-1.docker.io"]
            : [registry, "https://" + registry, "http://" + registry]
    }

    /// The credentials for `registry`, or nil (anonymous).
    public static func lookup(_ registry: String) throws -> Credentials? {
        let config = loadConfig()
        if let helpers = config["credHelpers"] as? [String: String] {
            for k in keys(registry) { if let h = helpers[k] { return try fromHelper(h, server: k) } }
        }
        if let auths = config["auths"] as? [String: Any] {
            for k in keys(registry) {
                guard let entry = auths[k] as? [String: Any] else { continue }
                if let auth = entry["auth"] as? String, let data = Data(base64Encoded: auth),
                   let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":") {
                    return Credentials(username: String(text[..<colon]), password: String(text[text.index(after: colon)...]))
                }
                if let store = config["credsStore"] as? String { return try fromHelper(store, server: k) }
            }
        }
        if let store = config["credsStore"] as? String { return try? fromHelper(store, server: keys(registry)[0]) }
        return nil
    }

    /// `docker-credential-NAME get`, the server on stdin, `{"Username": …, "Secret": …}` out.
    static func fromHelper(_ name: String, server: String) throws -> Credentials? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["docker-credential-" + name, "get"]
        let input = Pipe(), output = Pipe()
        p.standardInput = input
        p.standardOutput = output
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch {
            throw RegistryError("credential helper docker-credential-\(name) cannot be run: \(error)")
        }
        input.fileHandleForWriting.write(Data(server.utf8))
        try? input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }   // "credentials not found"
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let user = json["Username"] as? String, let secret = json["Secret"] as? String else {
            throw RegistryError("credential helper docker-credential-\(name) answered something that is not its JSON")
        }
        return Credentials(username: user, password: secret)
    }

    /// `rbuild login`: stores the credentials in `auths` (as base64, as docker does).
    public static func store(_ c: Credentials, for registry: String) throws {
        var config = loadConfig()
        var auths = config["auths"] as? [String: Any] ?? [:]
        let key = keys(registry)[0]
        auths[key] = ["auth": Data("\(c.username):\(c.password)".utf8).base64EncodedString()]
        config["auths"] = auths
        try write(config)
    }

    /// `rbuild logout`: removes them; false when there were none.
    public static func remove(for registry: String) throws -> Bool {
        var config = loadConfig()
        guard var auths = config["auths"] as? [String: Any] else { return false }
        let found = keys(registry).contains { auths.removeValue(forKey: $0) != nil }
        config["auths"] = auths
        try write(config)
        return found
    }

    static func write(_ config: [String: Any]) throws {
        let path = configPath
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let data = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        let tmp = path + ".\(getpid()).tmp"
        guard FileManager.default.createFile(atPath: tmp, contents: data, attributes: [.posixPermissions: 0o600]),
              rename(tmp, path) == 0 else {
            throw RegistryError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }
}
