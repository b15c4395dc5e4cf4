import Foundation
import Testing
@testable import RBuildDockerfile

enum Corpus {
    static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        url.deleteLastPathComponent()
        return url.path + "/Fixtures"
    }()

    static func cases(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: root + "/" + dir)) ?? []).sorted()
    }

    static func read(_ path: String) -> String {
        (try? String(contentsOfFile: root + "/" + path, encoding: .utf8)) ?? ""
    }
}

struct BuildKitParserCorpusTests {
    @Test("the corpus is present") func corpusPresent() {
        #expect(Corpus.cases("buildkit-parser/testfiles").count >= 30)
    }

    @Test("dump matches BuildKit's result", arguments: Corpus.cases("buildkit-parser/testfiles"))
    func dumpMatches(_ name: String) throws {
        let df = try Dockerfile.parse(Corpus.read("buildkit-parser/testfiles/\(name)/Dockerfile"))
        let expected = Corpus.read("buildkit-parser/testfiles/\(name)/result")
        #expect(df.dump() == expected.trimmingCharacters(in: .newlines))
    }

    @Test("negative cases fail with a located error", arguments: Corpus.cases("buildkit-parser/testfiles-negative"))
    func negative(_ name: String) {
        #expect(throws: DockerfileError.self) {
            try Dockerfile.parse(Corpus.read("buildkit-parser/testfiles-negative/\(name)/Dockerfile"))
        }
    }

    @Test("instruction line ranges")
    func lineRanges() throws {
        let df = try Dockerfile.parse(Corpus.read("buildkit-parser/testfile-line/Dockerfile"))
        #expect(df.nodes.map { [$0.range.startLine, $0.range.endLine] } == [[5, 5], [11, 12], [17, 31]])
    }
}
