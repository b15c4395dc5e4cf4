import Foundation
import Testing
import RBuildSystem
@testable import RBuildDockerfile

func parse(_ text: String) throws -> BuildDefinition {
    try Dockerfile.parse(text).definition()
}

func parseError(_ text: String) -> String? {
    do {
        _ = try parse(text)
        return nil
    } catch {
        return String(describing: error)
    }
}

struct ParserBehaviourTests {
    @Test func keywordsAreCaseInsensitiveAndKeepTheirSpelling() throws {
        let df = try Dockerfile.parse("from busybox\nRun echo hi\n")
        #expect(df.nodes.map(\.command) == ["from", "run"])
        #expect(df.nodes.map(\.keyword) == ["from", "Run"])
    }

    @Test func backtickEscapeContinuesLines() throws {
        let df = try Dockerfile.parse("# escape=`\nFROM windows\nRUN dir `\n  c:\\\n")
        #expect(df.escapeToken == "`")
        #expect(df.nodes[1].words == ["dir   c:\\"])
    }

    @Test func commentsAndBlankLinesInsideContinuations() throws {
        let df = try Dockerfile.parse("FROM a\nRUN one \\\n# comment\n\n  two\n")
        #expect(df.nodes[1].words == ["one   two"])
        #expect(df.nodes[1].range == SourceRange(startLine: 2, endLine: 5))
        #expect(df.warnings.count == 1, "an empty continuation line is reported")
    }

    @Test func invalidJSONFallsBackToShellForm() throws {
        let df = try Dockerfile.parse("FROM a\nCMD [\"unterminated\nENTRYPOINT ['single']\n")
        #expect(!df.nodes[1].isJSON)
        #expect(df.nodes[1].words == ["[\"unterminated"])
        #expect(df.nodes[2].words == ["['single']"])
    }

    @Test func heredocs() throws {
        let text = """
        FROM a
        RUN <<EOF
        echo $HOME
        EOF
        RUN <<-"EOT" bash
        \techo literal $x
        \tEOT
        COPY <<one.txt <<two.txt /dest/
        first
        one.txt
        second
        two.txt
        RUN ["echo", "<<EOF"]
        """
        let df = try Dockerfile.parse(text)
        #expect(df.nodes.count == 5)
        #expect(df.nodes[1].heredocs == [Heredoc(name: "EOF", fileDescriptor: 0, expand: true, chomp: false, content: "echo $HOME\n")])
        #expect(df.nodes[2].heredocs.first?.expand == false)
        #expect(df.nodes[2].heredocs.first?.chomp == true)
        #expect(df.nodes[3].heredocs.map(\.name) == ["one.txt", "two.txt"])
        #expect(df.nodes[3].heredocs.map(\.content) == ["first\n", "second\n"])
        #expect(df.nodes[4].heredocs.isEmpty, "exec form has no heredocs")
        #expect(df.nodes[3].range == SourceRange(startLine: 8, endLine: 12))
    }

    @Test func unterminatedHeredocIsAnError() {
        #expect(parseError("FROM a\nRUN <<EOF\necho\n")?.contains("Dockerfile:2:1: unterminated heredoc EOF") == true)
    }

    @Test func directives() throws {
        let df = try Dockerfile.parse("# syntax=docker/dockerfile:1\n# check=skip=all\nFROM a\n")
        #expect(df.syntax == "docker/dockerfile:1")
        #expect(df.check == "skip=all")
        #expect(parseError("# escape=x\nFROM a\n")?.contains("invalid escape token") == true)
        #expect(parseError("# escape=\\\n# escape=`\nFROM a\n")?.contains("only one escape parser directive") == true)
        // A directive after a comment is just a comment.
        #expect(try Dockerfile.parse("# hello\n# escape=`\nFROM a\n").escapeToken == "\\")
    }
}

struct TypedInstructionTests {
    @Test func stagesAndGlobalArgs() throws {
        let d = try parse("ARG V=1\nFROM --platform=$BUILDPLATFORM golang:$V AS build\nRUN go build\nFROM scratch\nCOPY --from=build /out /\n")
        #expect(d.globalArgs.count == 1)
        #expect(d.stages.count == 2)
        #expect(d.stages[0].from == From(image: "golang:$V", stageName: "build", asKeyword: "AS", platform: "$BUILDPLATFORM"))
        #expect(d.stages[1].reference == "1")
        guard case .copy(let c) = d.stages[1].instructions[0].instruction else { Issue.record("not a COPY"); return }
        #expect(c.from == "build" && c.sources == ["/out"] && c.destination == "/")
        #expect(d.stage(named: "BUILD")?.index == 0)
        #expect(d.stage(named: nil)?.index == 1)
    }

    @Test func everyInstruction() throws {
        let d = try parse("""
        FROM a
        RUN --mount=type=cache,target=/c --mount=type=secret,id=s --network=none --security=sandbox make
        CMD ["x"]
        ENTRYPOINT run me
        COPY --chown=1:2 --chmod=755 --link --parents --exclude=*.md --exclude=tmp a b /c/
        ADD --checksum=sha256:abc --keep-git-dir=true https://x/y.tar /y
        ENV A=1 B="two words"
        ENV C three four
        ARG X Y=2 Z=
        LABEL k=v
        EXPOSE 80 443/udp
        VOLUME ["/v1", "/v2"]
        USER app:staff
        WORKDIR /srv
        STOPSIGNAL SIGTERM
        HEALTHCHECK --interval=30s --timeout=1m30s --start-period=5s --start-interval=1s --retries=3 CMD curl -f http://x/
        SHELL ["/bin/bash", "-c"]
        MAINTAINER me
        ONBUILD RUN echo triggered
        HEALTHCHECK NONE
        """)
        let i = d.stages[0].instructions.map(\.instruction)
        #expect(i[0] == .run(Run(command: .shell("make"), mounts: ["type=cache,target=/c", "type=secret,id=s"], network: "none", security: "sandbox", heredocs: [])))
        #expect(i[1] == .cmd(.exec(["x"])))
        #expect(i[2] == .entrypoint(.shell("run me")))
        guard case .copy(let c) = i[3], case .add(let a) = i[4] else { Issue.record("COPY/ADD"); return }
        #expect(c.sources == ["a", "b"] && c.destination == "/c/" && c.chown == "1:2" && c.chmod == "755" && c.link && c.parents)
        #expect(c.excludes == ["*.md", "tmp"])
        #expect(a.checksum == "sha256:abc" && a.keepGitDir)
        #expect(i[5] == .env([KeyValue(key: "A", value: "1", legacy: false), KeyValue(key: "B", value: "\"two words\"", legacy: false)]))
        #expect(i[6] == .env([KeyValue(key: "C", value: "three four", legacy: true)]))
        #expect(i[7] == .arg([ArgDeclaration(name: "X", defaultValue: nil), ArgDeclaration(name: "Y", defaultValue: "2"), ArgDeclaration(name: "Z", defaultValue: "")]))
        #expect(i[9] == .expose(["80", "443/udp"]))
        #expect(i[10] == .volume(["/v1", "/v2"]))
        #expect(i[11] == .user("app:staff"))
        guard case .healthcheck(let h) = i[14] else { Issue.record("HEALTHCHECK"); return }
        #expect(h.interval == .seconds(30) && h.timeout == .seconds(90) && h.retries == 3 && h.test == .shell("curl -f http://x/"))
        #expect(i[15] == .shell(["/bin/bash", "-c"]))
        #expect(i[17] == .onbuild(.run(Run(command: .shell("echo triggered"), mounts: [], network: nil, security: nil, heredocs: [])), source: "RUN echo triggered"))
        #expect(i[18] == .healthcheck(Healthcheck(test: nil)))
    }

    @Test(arguments: [
        ("FROM a\nCOPY --form=x a b\n", "Dockerfile:2:1: unknown flag: --form (did you mean --from?)"),
        ("FORM a\n", "Dockerfile:1:1: unknown instruction: FORM (did you mean FROM?)"),
        ("FROM a\nRUN --mount a\n", "Dockerfile:2:1: missing a value on flag: --mount"),
        ("FROM a\nCOPY onlyone\n", "COPY requires at least two arguments"),
        ("FROM a b\n", "FROM requires either one or three arguments"),
        ("FROM a AS 1x\n", "invalid name for build stage"),
        ("RUN x\nFROM a\n", "no build stage in current context"),
        ("FROM a\nSHELL /bin/sh -c\n", "SHELL requires the arguments to be in JSON form"),
        ("FROM a\nONBUILD ONBUILD RUN x\n", "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
        ("FROM a\nONBUILD FROM b\n", "FROM isn't allowed as an ONBUILD trigger"),
        ("FROM a\nHEALTHCHECK --interval=soon CMD x\n", "invalid --interval=soon"),
        ("FROM a\nCOPY --link=maybe a b\n", "expecting boolean value for flag --link"),
        ("FROM a\nRUN --network=bridge x\n", "unsupported network mode \"bridge\""),
        ("FROM a\nENV\n", "ENV requires at least one argument"),
        ("FROM a\nENV PATH\n", "Dockerfile:2:1: ENV must have two arguments"),
        ("FROM a\nCMD [\"a\", 1]\n", "arrays must be comprised of strings only"),
        ("FROM a\nWORKDIR\n", "WORKDIR requires exactly one argument"),
    ])
    func errorsNameTheLine(_ text: String, _ message: String) {
        let e = parseError(text)
        #expect(e?.contains(message) == true, "\(e ?? "no error")")
    }

    @Test(arguments: [("30s", 30_000), ("1m30s", 90_000), ("1.5h", 5_400_000), ("300ms", 300), ("0", 0)])
    func goDurations(_ text: String, _ ms: Int64) {
        #expect(parseGoDuration(text) == .milliseconds(ms))
    }

    @Test func editDistanceCountsSwaps() {
        #expect(editDistance(Array("form"), Array("from")) == 1)
        #expect(closest("chwon", among: ["chown", "chmod"]) == "chown")
        #expect(closest("zzzzzz", among: ["from"]) == nil)
    }
}

struct VariableScopeTests {
    let host = try! Platform(parsing: "linux/amd64")

    @Test func platformArgs() {
        let c = ExpansionContext(buildPlatform: host, targetPlatform: try! Platform(parsing: "linux/arm/v7"))
        #expect(c.platformArgs["BUILDPLATFORM"] == "linux/amd64")
        #expect(c.platformArgs["TARGETPLATFORM"] == "linux/arm/v7")
        #expect(c.platformArgs["TARGETARCH"] == "arm")
        #expect(c.platformArgs["TARGETVARIANT"] == "v7")
        #expect(c.platformArgs["BUILDVARIANT"] == "")
        // One parser for the frontend and the images: the same aliases everywhere.
        for (text, normal) in [("linux/arm64/v8", "linux/arm64"), ("linux/arm", "linux/arm/v7"), ("amd64", "linux/amd64"),
                               ("linux/armhf", "linux/arm/v7"), ("linux/x86_64", "linux/amd64"), ("linux/aarch64", "linux/arm64")] {
            #expect((try? Platform(parsing: text))?.description == normal, "\(text)")
            let args = ExpansionContext(buildPlatform: host, targetPlatform: try? Platform(parsing: text)).platformArgs
            #expect(args["TARGETPLATFORM"] == normal)
        }
        #expect((try? Platform(parsing: "linux")) == nil)
    }

    @Test func globalArgsBuildArgsAndRedeclaration() throws {
        let d = try parse("ARG A=1\nARG B=${A}2\nARG C\nFROM x\nARG A\nARG B=local\nARG D=$A$B\nENV A=env\n")
        let context = ExpansionContext(buildArgs: ["C": "fromcli"], buildPlatform: host)
        let g = try GlobalScope(d, context: context)
        #expect(g.lookup("A") == "1")
        #expect(g.lookup("B") == "12")
        #expect(g.lookup("C") == "fromcli")
        #expect(g.lookup("TARGETOS") == "linux")
        var s = StageScope(global: g, context: context)
        #expect(s.lookup("A") == nil, "a global ARG is invisible in a stage until redeclared")
        for l in d.stages[0].instructions {
            switch l.instruction {
            case .arg(let decls): for a in decls { try s.declare(a) }
            case .env(let p): for kv in p { s.setEnv(kv.key, kv.value) }
            default: break
            }
        }
        #expect(s.lookup("B") == "local")
        #expect(s.lookup("D") == "1local")
        #expect(s.lookup("A") == "env", "ENV wins over ARG")
        #expect(s.runEnvironment.contains("A=env"))
        #expect(s.runEnvironment.contains("D=1local"))
    }

    @Test func proxyArgsReachRunWithoutDeclaration() throws {
        let d = try parse("FROM x\n")
        let context = ExpansionContext(buildArgs: ["HTTP_PROXY": "http://p:3128", "OTHER": "no"], buildPlatform: host)
        let s = StageScope(global: try GlobalScope(d, context: context), context: context)
        #expect(s.runEnvironment == ["HTTP_PROXY=http://p:3128"])
    }
}

struct LinterTests {
    func warnings(_ text: String, buildArgs: [String: String] = [:]) throws -> [String] {
        try Linter.check(Dockerfile.parse(text), context: ExpansionContext(buildArgs: buildArgs, buildPlatform: try! Platform(parsing: "linux/amd64")))
            .map { "\($0.rule)@\($0.range.startLine)" }
    }

    @Test(arguments: [
        ("FROM a AS Build\n", "StageNameCasing@1"),
        ("FROM a as b\n", "FromAsCasing@1"),
        ("FROM a\nCMD echo\n", "JSONArgsRecommended@2"),
        ("FROM a\nCOPY $nope /x\n", "UndefinedVar@2"),
        ("FROM a:$TAG\n", "UndefinedArgInFrom@1"),
        ("FROM a AS b\nFROM c AS b\n", "DuplicateStageName@2"),
        ("FROM a AS scratch\n", "ReservedStageName@1"),
        ("FROM a\nMAINTAINER me\n", "MaintainerDeprecated@2"),
        ("FROM a\nrun x\nRUN y\nRUN z\n", "ConsistentInstructionCasing@2"),
        ("FROM a\nWORKDIR rel\n", "WorkdirRelativePath@2"),
        ("FROM a\nCMD [\"a\"]\nCMD [\"b\"]\n", "MultipleInstructionsDisallowed@3"),
        ("FROM a\nENV k v\n", "LegacyKeyValueFormat@2"),
        ("FROM a\nEXPOSE 80/TCP\n", "ExposeProtoCasing@2"),
        ("FROM a\nARG GITHUB_TOKEN\n", "SecretsUsedInArgOrEnv@2"),
        ("FROM --platform=$TARGETPLATFORM a\n", "RedundantTargetPlatform@1"),
        ("FROM --platform=linux/amd64 a\n", "FromPlatformFlagConstDisallowed@1"),
        ("ARG IMG=\nFROM $IMG\n", "InvalidDefaultArgInFrom@2"),
        ("FROM a\nRUN x \\\n\n  y\n", "NoEmptyContinuation@2"),
    ])
    func ruleFires(_ text: String, _ expected: String) throws {
        let found = try warnings(text)
        #expect(found.contains(expected), "\(found)")
    }

    @Test func cleanDockerfileHasNoWarnings() throws {
        let text = """
        ARG BASE=alpine
        FROM $BASE AS build
        ARG NAME=x
        ENV GREETING=hello
        WORKDIR /src
        COPY . .
        RUN echo $GREETING $NAME $UNDECLARED_IN_RUN_IS_FINE
        FROM scratch
        COPY --from=build /src /app
        CMD ["/app"]
        """
        #expect(try warnings(text) == [])
    }

    @Test func checkDirectiveSkipsAndPromotes() throws {
        #expect(try warnings("# check=skip=JSONArgsRecommended\nFROM a\nCMD echo\n") == [])
        #expect(try warnings("# check=skip=all\nFROM a as B\nCMD echo\n") == [])
        let promoted = try Linter.check(Dockerfile.parse("# check=error=true\nFROM a\nCMD echo\n"),
                                        context: ExpansionContext(buildPlatform: try! Platform(parsing: "linux/amd64")))
        #expect(promoted.allSatisfy(\.isError) && promoted.count == 1)
        #expect(throws: DockerfileError.self) {
            try Linter.check(Dockerfile.parse("# check=bogus\nFROM a\n"), context: ExpansionContext(buildPlatform: try! Platform(parsing: "linux/amd64")))
        }
    }

    @Test func declaredArgsAreNotUndefined() throws {
        #expect(try warnings("ARG V=1\nFROM a:$V\nARG LATER\nCOPY $LATER /x\n").isEmpty)
    }
}

struct DockerIgnoreTests {
    let ignore = DockerIgnore("""
    # comment
    *.md
    !README.md
    /build
    ./tmp/
    **/*.log
    node_modules
    docs/**/draft?.txt
    !keep/**
    vendor/[a-c]*
    """)

    @Test(arguments: [
        ("CHANGELOG.md", true), ("README.md", false), ("sub/x.md", false), ("build", true), ("build/out/a.o", true),
        ("tmp/x", true), ("a.log", true), ("deep/er/b.log", true), ("node_modules/pkg/index.js", true),
        ("docs/a/b/draft1.txt", true), ("docs/draft1.txt", true), ("docs/a/draft10.txt", false),
        ("keep/x.log", false), ("vendor/apple", true), ("vendor/dog", false), ("src/main.swift", false),
    ])
    func matches(_ path: String, _ expected: Bool) {
        #expect(ignore.matches(path) == expected)
    }

    @Test func directorySkipping() {
        #expect(DockerIgnore("node_modules\n").canSkipDirectory("node_modules"))
        #expect(!DockerIgnore("build\n!build/keep.txt\n").canSkipDirectory("build"))
        #expect(!DockerIgnore("build\n!**/*.txt\n").canSkipDirectory("build"))
        #expect(!DockerIgnore("src\n").canSkipDirectory("other"))
    }

    /// `/` separates names even before a combining mark (a name may start with one): String's
    /// split kept `/\u{301}` as one Character, so `secrets/\u{301}key` was not below `secrets`
    /// and an exception's literal path not seen (the first rules are what
    /// scripts/fuzz/dockerignore found: `\u{6DA}` skipped a directory whose `\u{6DA}/\u{6DA}` it did not exclude).
    @Test func aNameStartingWithACombiningMark() {
        let found = DockerIgnore("\u{6DA}")
        #expect(found.canSkipDirectory("\u{6DA}") && found.matches("\u{6DA}/\u{6DA}"))
        let rules = DockerIgnore("secrets\n!secrets/README\n")
        #expect(rules.matches("secrets/\u{301}id_rsa"))
        #expect(!rules.matches("secrets/README"))
        #expect(!DockerIgnore("secrets\n!secrets/\u{301}keep\n").canSkipDirectory("secrets"))
        #expect(!DockerIgnore("secrets\n!*\u{301}\n").canSkipDirectory("secrets"))
        #expect(DockerIgnore("#\u{301} a comment\n").patterns.isEmpty)
        #expect(DockerIgnore("!\u{301}x\n").patterns.first?.exclusion == true)
    }

    /// Rules written back read as the same rules; the first file is the one scripts/fuzz/dockerignore
    /// found (a trailing `/` cleaned away left spaces that reading trims).
    @Test(arguments: [String(decoding: Array("./a/../b\n/abs\n".utf8) + [0x81] + Array("./up\n  space./ad  /".utf8), as: UTF8.self),
                      "./#not-a-comment\n./!not-an-exception\n!./!an-exception\n./  leading\n!trailing \t/"])
    func rulesWrittenBackReadTheSame(_ file: String) {
        let rules = DockerIgnore(file)
        #expect(DockerIgnore(rules.patterns.map(\.line).joined(separator: "\n")) == rules, "\(rules.patterns.map(\.line))")
    }

    @Test func dockerfileSpecificFileWins() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("di-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "a\n".write(toFile: dir + "/.dockerignore", atomically: false, encoding: .utf8)
        try "b\n".write(toFile: dir + "/app.Dockerfile.dockerignore", atomically: false, encoding: .utf8)
        #expect(try DockerIgnore.load(contextDirectory: dir, dockerfilePath: dir + "/app.Dockerfile").matches("b"))
        #expect(try DockerIgnore.load(contextDirectory: dir, dockerfilePath: dir + "/Dockerfile").matches("a"))
        #expect(try !DockerIgnore.load(contextDirectory: dir + "/none", dockerfilePath: nil).matches("a"))
    }
}
