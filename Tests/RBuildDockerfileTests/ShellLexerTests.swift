import Foundation
import Testing
@testable import RBuildDockerfile

struct ShellLexerCorpusTests {
    struct Case: Sendable, CustomStringConvertible {
        var line: Int
        var input: String
        var env: [String: String]
        var expected: [String]?
        var description: String { "wordsTest:\(line): \(input)" }
    }

    /// BuildKit's wordsTest: `input | word,word` (or `error`); `ENV k=v` lines set variables.
    static let cases: [Case] = {
        var env: [String: String] = [:]
        var out: [Case] = []
        for (i, raw) in Corpus.read("buildkit-shell/wordsTest").split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = String(raw)
            if line.hasPrefix("#") || line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            if line.hasPrefix("ENV ") {
                let kv = line.dropFirst(4)
                if let eq = kv.firstIndex(of: "=") { env[String(kv[..<eq])] = String(kv[kv.index(after: eq)...]) }
                continue
            }
            guard let bar = line.firstIndex(of: "|") else { continue }
            let input = line[..<bar].trimmingCharacters(in: .whitespaces)
            let right = String(line[line.index(after: bar)...].drop(while: { $0 == " " }))
            out.append(Case(line: i + 1, input: input, env: env,
                            expected: right == "error" ? nil : right.split(separator: ",", omittingEmptySubsequences: false).map(String.init)))
        }
        return out
    }()

    @Test func corpusLoaded() { #expect(Self.cases.count >= 20) }

    @Test(arguments: cases)
    func words(_ c: Case) {
        let lexer = ShellLexer()
        if let expected = c.expected {
            #expect((try? lexer.words(c.input, env: c.env)) == expected)
        } else {
            #expect(throws: ExpansionError.self) { try lexer.words(c.input, env: c.env) }
        }
    }
}

struct ExpansionTests {
    static let env = ["v": "hello.tar.gz", "empty": "", "path": "/usr/local/bin", "x": "ab ab ab"]

    @Test(arguments: [
        ("$v", "hello.tar.gz"), ("${v}", "hello.tar.gz"), ("$unset", ""), ("a$v-b", "ahello.tar.gz-b"),
        ("${unset:-def}", "def"), ("${empty:-def}", "def"), ("${empty-def}", ""), ("${unset-def}", "def"),
        ("${v:+alt}", "alt"), ("${empty:+alt}", ""), ("${empty+alt}", "alt"), ("${unset+alt}", ""),
        ("${v#*.}", "tar.gz"), ("${v##*.}", "gz"), ("${v%.*}", "hello.tar"), ("${v%%.*}", "hello"),
        ("${path/local/opt}", "/usr/opt/bin"), ("${x/ab/cd}", "cd ab ab"), ("${x//ab/cd}", "cd cd cd"),
        ("${path//\\//:}", ":usr:local:bin"), ("${v/#hel/HEL}", "hello.tar.gz"),
        ("${unset:-${v%%.*}}", "hello"), ("'$v'", "$v"), ("\"$v\"", "hello.tar.gz"), ("\\$v", "$v"),
        ("${v:?oops}", "hello.tar.gz"), ("$", "$"), ("${v#[a-h]}", "ello.tar.gz"),
    ])
    func expands(_ input: String, _ expected: String) throws {
        #expect(try ShellLexer().expand(input, env: Self.env).word == expected)
    }

    @Test(arguments: [
        ("${unset:?must be set}", "unset: must be set"), ("${empty:?}", "empty: is not allowed to be empty"),
        ("${unset?}", "unset: is not allowed to be unset"), ("${v", "missing '}'"), ("${}", "bad substitution"),
        ("${v:x}", "unsupported modifier (x)"), ("'open", "single-quote"), ("\"open", "double-quote"),
    ])
    func errors(_ input: String, _ message: String) {
        do {
            _ = try ShellLexer().expand(input, env: Self.env)
            Issue.record("expanded \(input)")
        } catch let e as ExpansionError {
            #expect(e.message.contains(message), "\(e.message)")
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test func backtickEscape() throws {
        var lexer = ShellLexer(escape: "`")
        #expect(try lexer.expand("C:\\path`$v", env: Self.env).word == "C:\\path$v")
        lexer.skipUnset = true
        #expect(try lexer.expand("$unset ${unset}", env: Self.env).word == "$unset ${unset}")
    }

    @Test func tracksReferencedVariables() throws {
        let r = try ShellLexer().expand("$v ${nope:-x} $other", env: Self.env)
        #expect(r.matched == ["v"])
        #expect(r.unmatched == ["nope", "other"])
    }
}
