import Foundation
import RBuildSystem

extension DockerIgnore {
    /// Reads `<Dockerfile>.dockerignore` beside the Dockerfile when it exists, else
    /// `<context>/.dockerignore`; no file means nothing is ignored.
    public static func load(contextDirectory: String, dockerfilePath: String?) throws -> DockerIgnore {
        var candidates: [String] = []
        if let dockerfilePath { candidates.append(dockerfilePath + ".dockerignore") }
        candidates.append(contextDirectory + "/.dockerignore")
        for path in candidates where FileManager.default.fileExists(atPath: path) {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw DockerfileError(file: path, line: 0, "cannot read \(path)")
            }
            return DockerIgnore(String(decoding: data, as: UTF8.self))
        }
        return DockerIgnore("")
    }

}
