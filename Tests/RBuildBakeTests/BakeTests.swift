import Foundation
@testable import RBuildBake
import Testing

private func load(_ name: String, _ text: String, env: [String: String] = [:], set: [String] = []) throws -> BakeDefinition {
    try Bake.load([BakeFile(name: name, contents: Array(text.utf8))], environment: env, overrides: set)
}

private let hcl = #"""
# the application
variable "TAG" { default = "dev" }
variable "PUSH" { default = false }
variable "JOBS" {
  default = 2
  description = "parallel jobs"
}
// a user function, used above its definition's line on purpose
target "base" {
  dockerfile = "Dockerfile"
  args = { GO = "1.22", JOBS = "${JOBS * 2}" }
  labels = { "org.opencontainers.image.source" = "https://example.com" }
  platforms = ["linux/amd64"]
}
function "tagged" {
  params = [name]
  result = "registry.example/${name}:${TAG}"
}
/* a matrix */
target "app" {
  inherits = ["base"]
  matrix = { tgt = ["web", "api"], ver = ["1.0", "2.0"] }
  name = "app-${tgt}-${replace(ver, ".", "-")}"
  target = tgt
  tags = [tagged("${tgt}-${ver}")]
  args = { VER = ver, PUSHED = PUSH ? "yes" : "no" }
  contexts = { tools = "target:tools" }
}
target "tools" {
  inherits = ["base"]
  dockerfile-inline = <<-EOT
    FROM busybox
    RUN echo ${TAG}
    EOT
  no-cache = !PUSH && JOBS >= 2
}
group "default" { targets = ["app", "tools"] }
"""#

private let json = #"""
{
  "variable": {
    "TAG": {"default": "dev"},
    "PUSH": {"default": false},
    "JOBS": {"default": 2, "description": "parallel jobs"}
  },
  "function": {
    "tagged": {"params": ["name"], "result": "registry.example/${name}:${TAG}"}
  },
  "target": {
    "base": {
      "dockerfile": "Dockerfile",
      "args": {"GO": "1.22", "JOBS": "${JOBS * 2}"},
      "labels": {"org.opencontainers.image.source": "https://example.com"},
      "platforms": ["linux/amd64"]
    },
    "app": {
      "inherits": ["base"],
      "matrix": {"tgt": ["web", "api"], "ver": ["1.0", "2.0"]},
      "name": "app-${tgt}-${replace(ver, \".\", \"-\")}",
      "target": "${tgt}",
      "tags": ["${tagged(\"${tgt}-${ver}\")}"],
      "args": {"VER": "${ver}", "PUSHED": "${PUSH ? \"yes\" : \"no\"}"},
      "contexts": {"tools": "target:tools"}
    },
    "tools": {
      "inherits": ["base"],
      "dockerfile-inline": "FROM busybox\nRUN echo ${TAG}\n",
      "no-cache": "${!PUSH && JOBS >= 2}"
    }
  },
  "group": {"default": {"targets": ["app", "tools"]}}
}
"""#

@Suite struct BakeHCLTests {
    @Test func resolvesVariablesInheritsMatrixAndLinks() throws {
        let d = try load("docker-bake.hcl", hcl, env: ["TAG": "v1", "PUSH": "true"])
        let ts = try d.resolve([])
        #expect(ts.map(\.name) == ["app-web-1-0", "app-api-1-0", "app-web-2-0", "app-api-2-0", "tools"])
        let web = ts[0]
        #expect(web.target == "web")
        #expect(web.tags == ["registry.example/web-1.0:v1"])
        #expect(web.args == ["GO": "1.22", "JOBS": "4", "VER": "1.0", "PUSHED": "yes"])
        #expect(web.platforms == ["linux/amd64"])
        #expect(web.context == "." && web.dockerfile == "Dockerfile")
        #expect(web.contexts == ["tools": "target:tools"])
        let tools = ts[4]
        #expect(tools.dockerfileInline == "FROM busybox\nRUN echo v1\n")
        #expect(tools.noCache == false) // PUSH=true from the environment, parsed as a bool
        #expect(d.variables.first { $0.name == "JOBS" } == BakeVariable(name: "JOBS", value: "2", description: "parallel jobs"))
    }

    @Test func jsonGivesTheSameTargets() throws {
        let env = ["TAG": "v1", "PUSH": "false", "JOBS": "3"]
        let a = try load("docker-bake.hcl", hcl, env: env).resolve(["default"])
        let b = try load("docker-bake.json", json, env: env).resolve(["default"])
        #expect(a == b)
        #expect(a.last?.noCache == true)
        #expect(a.first?.args["JOBS"] == "6")
    }

    @Test func matrixNameStandsForItsTargetsAndLinkedTargetsComeLast() throws {
        let d = try load("docker-bake.hcl", hcl)
        let ts = try d.resolve(["app"])
        #expect(ts.map(\.name) == ["app-web-1-0", "app-api-1-0", "app-web-2-0", "app-api-2-0", "tools"])
        #expect(ts.last?.outputs == ["type=cacheonly"])
    }

    @Test func setOverridesWithGlobs() throws {
        let d = try load("docker-bake.hcl", hcl, set: [
            "app-web-*.args.VER=9", "*.platform=linux/arm64", "*.platform=linux/riscv64",
            "tools.tags=t:1", "tools.tags+=t:2", "app-api-1-0.no-cache=true", "tools.output=type=local,dest=out",
        ])
        let ts = try d.resolve(["app", "tools"])
        #expect(ts[0].args["VER"] == "9")
        #expect(ts[1].args["VER"] == "1.0")
        #expect(ts[1].noCache == true)
        #expect(ts.allSatisfy { $0.platforms == ["linux/arm64", "linux/riscv64"] })
        #expect(ts[4].tags == ["t:1", "t:2"])
        #expect(ts[4].outputs == ["type=local,dest=out"])
        #expect(throws: BakeError.self) { try load("docker-bake.hcl", hcl, set: ["nomatch*.tags=x"]) }
        #expect(throws: BakeError.self) { try load("docker-bake.hcl", hcl, set: ["tools.bogus=x"]) }
    }

    @Test func defaultsAndErrors() throws {
        let d = try load("docker-bake.hcl", #"target "default" { tags = ["a"] }"#)
        #expect(try d.resolve([]).map(\.name) == ["default"])
        let e = try load("docker-bake.hcl", #"target "x" {}"#)
        #expect(throws: BakeError.self) { try e.resolve([]) }
        let cyc = try load("docker-bake.hcl", "group \"a\" { targets = [\"b\"] }\ngroup \"b\" { targets = [\"a\"] }\n")
        do { _ = try cyc.resolve(["a"]); Issue.record("no error") } catch let err as BakeError {
            #expect(err.message.contains("group cycle: a → b → a"))
        }
        #expect(throws: BakeError.self) { try load("b.hcl", "target \"a\" { inherits = [\"b\"] }\ntarget \"b\" { inherits = [\"a\"] }\n") }
    }

    @Test func listsTargetsAndVariables() throws {
        let d = try load("docker-bake.hcl", hcl + "\ntarget \"_private\" {}\ntarget \"doc\" { description = \"docs\" }\n")
        let rows = d.listTargets()
        #expect(rows.map(\.name).contains("default"))
        #expect(!rows.map(\.name).contains("_private"))
        #expect(rows.first { $0.name == "default" }?.description == "app, tools")
        #expect(rows.first { $0.name == "doc" }?.description == "docs")
        #expect(d.listVariables().map(\.name) == ["JOBS", "PUSH", "TAG"])
    }

    /// From https://docs.docker.com/reference/cli/docker/buildx/bake/#print (buildx's
    /// docs/reference/buildx_bake.md). The doc shows "context": "./", written by an older buildx;
    /// today's ResolveTarget fills in "." when the file sets none, as here.
    @Test func printMatchesBuildx() throws {
        let d = try load("docker-bake.hcl", #"""
        target "db" {
          dockerfile = "Dockerfile"
          tags = ["docker.io/tiborvass/db"]
        }
        """#)
        let expected = """
        {
          "group": {
            "default": {
              "targets": [
                "db"
              ]
            }
          },
          "target": {
            "db": {
              "context": ".",
              "dockerfile": "Dockerfile",
              "tags": [
                "docker.io/tiborvass/db"
              ]
            }
          }
        }

        """
        #expect(String(decoding: try d.printJSON(["db"]), as: UTF8.self) == expected)
    }

    @Test func printEscapesAndTypedEntries() throws {
        let d = try load("docker-bake.hcl", #"""
        target "a" {
          args = { X = "$${HOME}&" }
          cache-from = ["user/app:cache", "type=local,src=c"]
          output = ["type=tar,dest=hi.tar"]
          secret = ["id=aws,src=/root/.aws/credentials"]
          no-cache = true
        }
        """#)
        let out = String(decoding: try d.printJSON(["a"]), as: UTF8.self)
        #expect(out.contains(#""X": "$${HOME}\u0026""#))
        #expect(out.contains("""
              "cache-from": [
                {
                  "ref": "user/app:cache",
                  "type": "registry"
                },
        """))
        #expect(out.contains(#""dest": "hi.tar","#))
        #expect(out.contains(#""src": "/root/.aws/credentials""#))
        #expect(out.contains(#""no-cache": true"#))
    }

    struct Broken: Sendable, CustomStringConvertible {
        var text: String
        var line: Int
        var column: Int
        var description: String { text }
    }

    @Test(arguments: [
        Broken(text: "target \"a\" {\n  tags = [\"x\"\n}\n", line: 3, column: 1),
        Broken(text: "target \"a\" {\n  tags = \"x\"\n}\n", line: 2, column: 3),
        Broken(text: "target \"a\" {\n  args = { A = \"${nope}\" }\n}\n", line: 2, column: 19),
        Broken(text: "variable \"X\" {\n  default = \"unterminated\n}\n", line: 2, column: 26),
        Broken(text: "target \"a\" {\n  bogus = 1\n}\n", line: 2, column: 3),
        Broken(text: "target \"a\" {\n  context = 1 +\n}\n", line: 2, column: 16),
        Broken(text: "target \"a\" {\n  dockerfile-inline = <<EOT\nFROM x\n}\n", line: 2, column: 23),
        Broken(text: "/* open\ntarget \"a\" {}\n", line: 1, column: 1),
        Broken(text: "target \"a\" {\n  tags = [upper(1, 2)]\n}\n", line: 2, column: 11),
        Broken(text: "variable \"A\" { default = B }\nvariable \"B\" { default = A }\n", line: 2, column: 26),
    ])
    func parseErrorsNameTheirPlace(_ b: Broken) throws {
        do {
            _ = try load("docker-bake.hcl", b.text)
            Issue.record("no error for \(b.text)")
        } catch let e as BakeError {
            #expect(e.file == "docker-bake.hcl")
            #expect(e.line == b.line && e.column == b.column, "\(e)")
        }
    }

    @Test func jsonErrorsHaveLineAndColumn() throws {
        do {
            _ = try load("docker-bake.json", "{\n  \"target\": {\n    \"a\": {\"tags\": [\"x\",]}\n  }\n}\n")
            Issue.record("no error")
        } catch let e as BakeError {
            #expect(e.line == 3 && e.column == 24, "\(e)")
        }
    }

    @Test func forExpressionsAndTypedVariables() throws {
        let d = try load("docker-bake.hcl", #"""
        variable "PLATFORMS" {
          type = list(string)
          default = ["linux/amd64"]
        }
        variable "N" { type = number }
        target "a" {
          platforms = [for p in PLATFORMS: p if p != "linux/s390x"]
          labels = {for k, v in {a = 1, b = 2}: "x.${k}" => v * N}
        }
        """#, env: ["PLATFORMS": "linux/arm64,linux/s390x", "N": "10"])
        let t = try d.resolve(["a"])[0]
        #expect(t.platforms == ["linux/arm64"])
        #expect(t.labels == ["x.a": "10", "x.b": "20"])
    }
}

@Suite struct BakeComposeTests {
    static let compose = """
    services:
      web:
        image: example/web:${TAG:-latest}
        build:
          context: ./app
          target: web
          args:
            - BASE=debian
            - FROM_ENV
          secrets:
            - npm
            - token
          x-bake:
            platforms: [linux/amd64, linux/arm64]
            output: type=registry
            cache-to: type=inline
      worker:
        build:
          context: ./app
          dockerfile: Dockerfile
          target: worker
          labels:
            role: worker
          tags: [example/worker:1]
      db:
        image: postgres
    secrets:
      npm:
        file: ./npmrc
      token:
        environment: TOKEN
    """

    @Test func servicesBecomeTargets() throws {
        let d = try load("compose.yaml", Self.compose, env: ["FROM_ENV": "yes"])
        let ts = try d.resolve([])
        #expect(ts.map(\.name) == ["web", "worker"])
        let web = ts[0], worker = ts[1]
        #expect(web.context == "app" && worker.context == "app")
        #expect(web.dockerfile == "Dockerfile" && worker.dockerfile == "Dockerfile")
        #expect(web.target == "web" && worker.target == "worker")
        #expect(web.tags == ["example/web:latest"])
        #expect(web.args == ["BASE": "debian", "FROM_ENV": "yes"])
        #expect(web.secrets == ["id=npm,src=./npmrc", "id=token,env=TOKEN"])
        #expect(web.platforms == ["linux/amd64", "linux/arm64"])
        #expect(web.outputs == ["type=registry"])
        #expect(web.cacheTo == ["type=inline"])
        #expect(worker.labels == ["role": "worker"])
        #expect(worker.tags == ["example/worker:1"])
        let tagged = try load("compose.yaml", Self.compose, env: ["TAG": "2"]).resolve(["web"])
        #expect(tagged[0].tags == ["example/web:2"])
    }

    @Test func yamlErrorsHaveLineAndColumn() throws {
        do {
            _ = try load("compose.yaml", "services:\n  web:\n    build: [\n")
            Issue.record("no error")
        } catch let e as BakeError {
            #expect(e.line > 0, "\(e)")
        }
    }

    @Test func laterFilesMergeOverEarlier() throws {
        let d = try Bake.load([
            BakeFile(name: "compose.yaml", contents: Array(Self.compose.utf8)),
            BakeFile(name: "docker-bake.hcl", contents: Array(#"target "web" { tags = ["override:1"] }"#.utf8)),
        ], environment: [:])
        #expect(try d.resolve(["web"])[0].tags == ["override:1"])
        #expect(try d.resolve(["web"])[0].target == "web")
    }

    @Test func defaultFileNamesInBuildxOrder() {
        #expect(Bake.defaultFileNames.first == "compose.yaml")
        #expect(Bake.defaultFileNames.last == "docker-bake.override.hcl")
    }
}

@Suite struct HCLFunctionTests {
    struct Case: Sendable, CustomStringConvertible {
        var expr: String
        var expected: String
        var description: String { expr }
    }

    /// Each function once at least; results written as JSON text of the value.
    @Test(arguments: [
        Case(expr: #"equal(2, 2)"#, expected: "true"),
        Case(expr: #"notequal("a", "b")"#, expected: "true"),
        Case(expr: #"and(true, false)"#, expected: "false"),
        Case(expr: #"or(true, false)"#, expected: "true"),
        Case(expr: #"not(false)"#, expected: "true"),
        Case(expr: #"join("-", ["a", "b"], ["c"])"#, expected: #""a-b-c""#),
        Case(expr: #"split(",", "a,b,c")"#, expected: #"["a","b","c"]"#),
        Case(expr: #"lower("AbC")"#, expected: #""abc""#),
        Case(expr: #"upper("abc")"#, expected: #""ABC""#),
        Case(expr: #"trimprefix("v1.2", "v")"#, expected: #""1.2""#),
        Case(expr: #"trimsuffix("app.tar", ".tar")"#, expected: #""app""#),
        Case(expr: #"trimspace("  x \n")"#, expected: #""x""#),
        Case(expr: #"replace("1.2.3", ".", "-")"#, expected: #""1-2-3""#),
        Case(expr: #"regex_replace("v1.2.3", "^v([0-9]+)\\..*$", "$1")"#, expected: #""1""#),
        Case(expr: #"regex("[0-9]+", "abc123def")"#, expected: #""123""#),
        Case(expr: #"regex("(\\w+)-(\\d+)", "app-42")"#, expected: #"["app","42"]"#),
        Case(expr: #"format("%s-%03d-%.1f %%", "a", 7, 2.25)"#, expected: #""a-007-2.2 %""#),
        Case(expr: #"formatdate("YYYY-MM-DD hh:mm:ss EEE MMM", "2025-09-16T12:03:04Z")"#, expected: #""2025-09-16 12:03:04 Tue Sep""#),
        Case(expr: #"formatdate("DD MMMM YY h:m 'at' ZZZZZ", "2024-02-01T07:05:00+02:00")"#, expected: #""01 February 24 7:5 at +02:00""#),
        Case(expr: #"timestamp()"#, expected: #""2023-11-14T22:13:20Z""#),
        Case(expr: #"concat(["a"], ["b", "c"])"#, expected: #"["a","b","c"]"#),
        Case(expr: #"distinct(["a", "b", "a"])"#, expected: #"["a","b"]"#),
        Case(expr: #"coalesce(null, "x", "y")"#, expected: #""x""#),
        Case(expr: #"lookup({a = "1"}, "b", "none")"#, expected: #""none""#),
        Case(expr: #"length([1, 2, 3])"#, expected: "3"),
        Case(expr: #"contains(["a", "b"], "b")"#, expected: "true"),
        Case(expr: #"index({foo = "bar", baz = "qux"}, "baz")"#, expected: #""qux""#),
        Case(expr: #"keys({b = 1, a = 2})"#, expected: #"["a","b"]"#),
        Case(expr: #"values({b = 1, a = 2})"#, expected: "[2,1]"),
        Case(expr: #"element(["a", "b", "c"], 4)"#, expected: #""b""#),
        Case(expr: #"slice(["a", "b", "c", "d"], 1, 3)"#, expected: #"["b","c"]"#),
        Case(expr: #"flatten([[1, 2], [3, [4]], [5]])"#, expected: "[1,2,3,4,5]"),
        Case(expr: #"merge({a = 1}, {b = 2}, {a = 3})"#, expected: #"{"a":3,"b":2}"#),
        Case(expr: #"min(3, 1, 2)"#, expected: "1"),
        Case(expr: #"max(3, 1, 2)"#, expected: "3"),
        Case(expr: #"abs(-4.5)"#, expected: "4.5"),
        Case(expr: #"tostring(12)"#, expected: #""12""#),
        Case(expr: #"tonumber("12.5")"#, expected: "12.5"),
        Case(expr: #"sort(["b", "c", "a"])"#, expected: #"["a","b","c"]"#),
        Case(expr: #"reverse("abc")"#, expected: #""cba""#),
        Case(expr: #"reverselist([1, 2])"#, expected: "[2,1]"),
        Case(expr: #"1 + 2 * 3 - 4 / 2 % 3"#, expected: "5"),
        Case(expr: #"-(1 + 2) < 0 && !(2 >= 3) || false"#, expected: "true"),
        Case(expr: #"true ? "a" : "b""#, expected: #""a""#),
        Case(expr: #"{a: [10, 20]}.a[1]"#, expected: "20"),
        Case(expr: #"{ "k" = "v" }["k"]"#, expected: #""v""#),
        Case(expr: #""$${literal} ${"x"}""#, expected: #""${literal} x""#),
        Case(expr: #"upper(["a", "b"]...)"#, expected: "error"),
    ])
    func functions(_ c: Case) throws {
        let body = try HCLParser.parse(file: "f.hcl", bytes: Array("x = \(c.expr)\n".utf8))
        let ev = Evaluator(environment: [:], now: { Date(timeIntervalSince1970: 1_700_000_000) })
        do {
            let v = try ev.eval(body.attributes[0].expr, [:])
            #expect(v.jsonText == c.expected)
        } catch let e as BakeError {
            #expect(c.expected == "error", "\(e)")
        }
    }
}

/// Inputs found by scripts/fuzz/bake (or written beside it): each once crashed or hung the reader.
@Suite struct BakeFuzzRegressionTests {
    private func error(_ name: String, _ text: String) -> BakeError? {
        do { _ = try load(name, text); return nil } catch let e as BakeError { return e } catch { return nil }
    }

    /// 3,000 parentheses overflowed the stack in the recursive-descent parser.
    @Test func hclNestingHasALimit() throws {
        let e = try #require(error("docker-bake.hcl", "x = " + String(repeating: "(", count: 3000) + "1" + String(repeating: ")", count: 3000) + "\n"))
        #expect(e.file == "docker-bake.hcl" && e.line == 1 && e.column == 5 + HCLParser.maxDepth, "\(e)")
        #expect(e.message.contains("nested more than 64 levels"), "\(e)")
        #expect(error("docker-bake.hcl", "x = " + String(repeating: "[", count: 5000)) != nil)
        #expect(error("docker-bake.hcl", "x = \"" + String(repeating: "${\"", count: 2000) + "\n") != nil)
        #expect(error("docker-bake.hcl", "x = " + String(repeating: "!", count: 6000) + "true\n")?.message.contains("nested") == true)
        #expect(error("docker-bake.hcl", String(repeating: "a {\n", count: 2500) + String(repeating: "}\n", count: 2500))?.message.contains("nested") == true)
        // 64 levels still read.
        let ok = "target \"a\" {\n  tags = " + String(repeating: "[", count: 60) + "\"x\"" + String(repeating: "]", count: 60) + "\n}\n"
        #expect(error("docker-bake.hcl", ok)?.message.contains("nested") != true)
    }

    @Test func jsonNestingHasALimit() throws {
        let e = try #require(error("docker-bake.json", String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000)))
        #expect(e.line == 1 && e.column == JSONReader.maxDepth + 1 && e.message.contains("nested more than 64"), "\(e)")
        let deep = "{\"target\": {\"a\": {\"args\": {\"X\": " + String(repeating: "{\"a\": ", count: 3000) + "1" + String(repeating: "}", count: 3000) + "}}}}"
        #expect(error("docker-bake.json", deep)?.message.contains("nested") == true)
    }

    /// Yams builds its tree recursively: 4,000 `[` (or a JSON file read as compose) overflowed the stack.
    @Test func yamlNestingHasALimit() throws {
        let flow = try #require(error("compose.yaml", String(repeating: "[", count: 4000) + String(repeating: "]", count: 4000)))
        #expect(flow.line == 1 && flow.message.contains("nested more than 100"), "\(flow)")
        let block = "services:\n  a:\n    build:\n      x-bake:\n        tags:\n" + String(repeating: "- ", count: 3000) + "x\n"
        let e = try #require(error("compose.yaml", block))
        #expect(e.line == 6 && e.message.contains("nested"), "\(e)")
        var indented = "services:\n"
        for i in 1...200 { indented += String(repeating: " ", count: i) + "k\(i):\n" }
        #expect(error("compose.yaml", indented)?.message.contains("nested") == true)
    }

    /// Nothing that only looks nested is refused: block scalars, quotes, comments.
    @Test func yamlNestingCheckLeavesTextAlone() throws {
        let compose = """
        services:
          web:
            build:
              context: .
              dockerfile_inline: |
                FROM scratch
        \(String(repeating: " ", count: 300))RUN echo [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
              args:
                A: "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                B: '{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{'
                C: it's # [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
        """
        let t = try load("compose.yaml", compose).resolve(["web"])[0]
        #expect(t.dockerfileInline?.hasPrefix("FROM scratch\n") == true)
        #expect(t.args["B"]??.count == 111 && t.args["C"] == "it's")
    }

    /// A function whose result nests 60 lists around a call of itself, 100 calls deep,
    /// overflowed the stack in evaluation (each expression within the parser's limit).
    @Test func evaluationDepthHasALimit() throws {
        for (open, close) in [("[", "]"), ("upper(", ")"), ("\"${", "}\"")] {
            let f = "function \"f\" {\n  params = [x]\n  result = " + String(repeating: open, count: 60) + "f(x)"
                + String(repeating: close, count: 60) + "\n}\ntarget \"default\" { tags = [f(1)] }\n"
            let e = try #require(error("docker-bake.hcl", f))
            #expect(e.line == 3 && (e.message.contains("nested more than 512") || e.message.contains("too deeply")), "\(e)")
        }
    }

    /// Numbers past Int's range trapped on conversion (1e300 and infinity are whole numbers);
    /// format widths of a billion asked for a gigabyte; a matrix of 10^10 combinations.
    @Test func hugeNumbersAreErrors() throws {
        for expr in ["element([\"a\"], 1e300)", "slice([\"a\"], 0, 1e300)", "substr(\"abc\", 1, 1e300)",
                     "[\"a\"][1e300]", "[\"a\"][-1e300]", "format(\"%d\", 1e300)", "format(\"%d\", 1e308 * 10)",
                     "format(\"%999999999d\", 1)", "format(\"%.999999999f\", 1)", "format(\"%-99999999999999999999s\", \"a\")"] {
            let e = error("docker-bake.hcl", "target \"default\" { args = { A = \(expr) } }\n")
            #expect(e != nil, "\(expr)")
        }
        #expect(try load("docker-bake.hcl", "target \"default\" { args = { A = substr(\"abcd\", 1, 9007199254740991) } }\n")
            .resolve([])[0].args["A"] == "bcd")
        let keys = (0..<10).map { "k\($0) = [" + (0..<10).map { "\"\($0)\"" }.joined(separator: ",") + "]" }.joined(separator: ", ")
        let m = try #require(error("docker-bake.hcl", "target \"a\" {\n  matrix = { \(keys) }\n  name = \"a\"\n}\n"))
        #expect(m.line == 2 && m.message.contains("more than 1024 targets"), "\(m)")
    }

    /// A group named as a glob with many `*`s, asked for beside a long target name, hung the
    /// glob matcher (exponential in the stars).
    @Test func globNamesResolveInLinearTime() throws {
        let d = try load("docker-bake.hcl", "target \"" + String(repeating: "a", count: 3000) + "\" {}\ngroup \"*a*a*a*a*a*a*a*a*a*a*b\" { targets = [] }\n")
        #expect(try d.resolve(["*a*a*a*a*a*a*a*a*a*a*b"]).isEmpty) // the (empty) group only
        #expect(try d.resolve(["*a*a*a*a*a*a*a*a*a*a*"]).count == 1)
    }

    /// Aliases of aliases expand exponentially (a "billion laughs").
    @Test func yamlAliasExpansionHasALimit() throws {
        var y = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for i in 1...8 { y += "a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ") + "]\n" }
        y += "services:\n  web:\n    build:\n      context: .\n      x-bake:\n        tags: *a8\n"
        #expect(error("compose.yaml", y)?.message.contains("expands to more than") == true)
    }
}
