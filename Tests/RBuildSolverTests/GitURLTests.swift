import RBuildSolver
import Testing

/// BuildKit's cases for which strings are git URLs and what they say: `util/gitutil`'s
/// TestParseURL and the Dockerfile frontend's TestParseGitRef (dfgitutil/git_ref_test.go).
struct GitURLTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var url: String
        var remote: String
        var scheme: String
        var shortName: String
        var ref = ""
        var subdir = ""
        var checksum: String?
        var local = false
        var testDescription: String { url }
    }

    @Test("git URLs and what they name", arguments: [
        Case(url: "https://example.com/foo.git", remote: "https://example.com/foo.git", scheme: "https", shortName: "foo"),
        Case(url: "https://example.com/foo.git#deadbeef", remote: "https://example.com/foo.git", scheme: "https", shortName: "foo",
             ref: "deadbeef"),
        Case(url: "https://example.com/foo.git#release/1.2", remote: "https://example.com/foo.git", scheme: "https", shortName: "foo",
             ref: "release/1.2"),
        Case(url: "git://example.com/foo", remote: "git://example.com/foo", scheme: "git", shortName: "foo"),
        Case(url: "github.com/moby/buildkit", remote: "github.com/moby/buildkit", scheme: "https", shortName: "buildkit", local: true),
        Case(url: "github.com/moby/buildkit#master", remote: "github.com/moby/buildkit", scheme: "https", shortName: "buildkit",
             ref: "master", local: true),
        Case(url: "https://github.com/moby/buildkit.git", remote: "https://github.com/moby/buildkit.git", scheme: "https",
             shortName: "buildkit"),
        Case(url: "https://foo:bar@github.com/moby/buildkit.git", remote: "https://foo:bar@github.com/moby/buildkit.git",
             scheme: "https", shortName: "buildkit"),
        Case(url: "git@github.com:moby/buildkit", remote: "git@github.com:moby/buildkit", scheme: "ssh", shortName: "buildkit"),
        Case(url: "git@github.com:moby/buildkit.git", remote: "git@github.com:moby/buildkit.git", scheme: "ssh", shortName: "buildkit"),
        Case(url: "git@bitbucket.org:atlassianlabs/atlassian-docker.git", remote: "git@bitbucket.org:atlassianlabs/atlassian-docker.git",
             scheme: "ssh", shortName: "atlassian-docker"),
        Case(url: "https://github.com/foo/bar.git#baz/qux:quux/quuz", remote: "https://github.com/foo/bar.git", scheme: "https",
             shortName: "bar", ref: "baz/qux", subdir: "quux/quuz"),
        Case(url: "https://github.com/docker/docker.git#:myfolder", remote: "https://github.com/docker/docker.git", scheme: "https",
             shortName: "docker", subdir: "myfolder"),
        Case(url: "https://github.com/docker/docker.git?ref=v1.0.0&subdir=/subdir", remote: "https://github.com/docker/docker.git",
             scheme: "https", shortName: "docker", ref: "v1.0.0", subdir: "subdir"),
        Case(url: "https://github.com/moby/buildkit.git?subdir=/subdir#v1.0.0", remote: "https://github.com/moby/buildkit.git",
             scheme: "https", shortName: "buildkit", ref: "v1.0.0", subdir: "subdir"),
        Case(url: "https://github.com/moby/buildkit.git?tag=v1.0.0", remote: "https://github.com/moby/buildkit.git", scheme: "https",
             shortName: "buildkit", ref: "refs/tags/v1.0.0"),
        Case(url: "github.com/moby/buildkit?tag=v1.0.0", remote: "github.com/moby/buildkit", scheme: "https", shortName: "buildkit",
             ref: "refs/tags/v1.0.0", local: true),
        Case(url: "https://github.com/moby/buildkit.git?branch=v1.0", remote: "https://github.com/moby/buildkit.git", scheme: "https",
             shortName: "buildkit", ref: "refs/heads/v1.0"),
        Case(url: "git@github.com:moby/buildkit.git?subdir=/subdir#v1.0.0", remote: "git@github.com:moby/buildkit.git", scheme: "ssh",
             shortName: "buildkit", ref: "v1.0.0", subdir: "subdir"),
        Case(url: "https://github.com/moby/buildkit.git?fetch-by-commit&checksum=deadbeef", remote: "https://github.com/moby/buildkit.git",
             scheme: "https", shortName: "buildkit", checksum: "deadbeef"),
        // util/gitutil's forms.
        Case(url: "ssh://git@github.com/moby/buildkit.git", remote: "ssh://git@github.com/moby/buildkit.git", scheme: "ssh",
             shortName: "buildkit"),
        Case(url: "ssh://git@github.com:22/moby/buildkit.git#v1.0.0:hack", remote: "ssh://git@github.com:22/moby/buildkit.git",
             scheme: "ssh", shortName: "buildkit", ref: "v1.0.0", subdir: "hack"),
        Case(url: "nonstandarduser@example.com:/srv/repos/weird/project.git", remote: "nonstandarduser@example.com:/srv/repos/weird/project.git",
             scheme: "ssh", shortName: "project"),
        Case(url: "git://host.xz:1234/path/to/repo.git", remote: "git://host.xz:1234/path/to/repo.git", scheme: "git", shortName: "repo"),
        Case(url: "ssh://someuser@192.168.0.123:456/~/repo-in-my-home-dir.git", remote: "ssh://someuser@192.168.0.123:456/~/repo-in-my-home-dir.git",
             scheme: "ssh", shortName: "repo-in-my-home-dir"),
        Case(url: "GIT://host/a/b#main", remote: "git://host/a/b", scheme: "git", shortName: "b", ref: "main"),
        Case(url: "https://h/a.git#main:/x/../y/", remote: "https://h/a.git", scheme: "https", shortName: "a", ref: "main", subdir: "y"),
    ])
    func parses(_ c: Case) throws {
        let r = try #require(try GitReference.parse(c.url))
        #expect(r.remote == c.remote)
        #expect(r.scheme == c.scheme)
        #expect(r.shortName == c.shortName)
        #expect(r.ref == c.ref)
        #expect(r.subdir == c.subdir)
        #expect(r.checksum == c.checksum)
        #expect(r.indistinguishableFromLocal == c.local)
    }

    @Test("strings that are not git URLs", arguments: [
        "https://example.com/", "https://example.com/foo", "https://example.com/foo.git/", "https://example.com/foo.git.bar",
        "custom.xyz/moby/buildkit.git", "https://github.com/moby/buildkit", "http://github.com/docker/docker.git:#branch",
        "./.git", ".git", "httpx://github.com/moby/buildkit.git", "ftp://h/r.git", "../r.git", "src/", "dir/file.tar.gz",
        "https://h/r.tar.gz", "user@:path", "@host:path",
    ])
    func notGit(_ url: String) throws {
        #expect(try GitReference.parse(url) == nil)
    }

    @Test("git URLs with wrong options", arguments: [
        ("https://github.com/moby/buildkit.git?ref=v1.0.0#v1.2.3", "ref conflicts"),
        ("https://github.com/moby/buildkit.git?ref=v1.0.0&tag=v1.2.3", "ref conflicts"),
        ("https://github.com/moby/buildkit.git?tag=v1.0.0&branch=v1.0", "branch conflicts with tag"),
        ("https://github.com/moby/buildkit.git?mtime=invalid", "invalid mtime value"),
        ("https://github.com/moby/buildkit.git?fetch-by-commit=invalid", "invalid fetch-by-commit value"),
        ("https://github.com/moby/buildkit.git?invalid=123", "unexpected query \"invalid\""),
        ("https://github.com/moby/buildkit.git?ref=", "query \"ref\" has no value"),
        ("https://github.com/moby/buildkit.git?ref=a&ref=b", "has multiple values"),
    ])
    func refused(_ url: String, _ message: String) {
        #expect {
            _ = try GitReference.parse(url)
        } throws: { "\($0)".contains(message) }
    }

    @Test func queryFlags() throws {
        let r = try #require(try GitReference.parse("https://h/r.git?keep-git-dir&mtime=commit&submodules=false#v1"))
        #expect(r.keepGitDir == true && r.mtime == "commit" && r.submodules == false && r.ref == "v1")
        let s = try GitSource(r)
        #expect(s.keepGitDir && s.mtimeCommit)
    }

    @Test func addFlagsMustAgreeWithTheURL() throws {
        let r = try #require(try GitReference.parse("https://h/r.git?checksum=abc&keep-git-dir=false"))
        #expect(throws: SolveError.self) { try GitSource(r, checksum: "abd") }
        #expect(throws: SolveError.self) { try GitSource(r, keepGitDir: true) }
        #expect(try GitSource(r, checksum: "abc").checksum == "abc")
        let plain = try #require(try GitReference.parse("https://h/r.git"))
        #expect(throws: SolveError.self) { try GitSource(plain, checksum: "sha256:0123") }
        #expect(try GitSource(plain, checksum: "ABCDEF").checksum == "abcdef")
    }

    @Test("passwords never reach a message", arguments: [
        ("https://u:secret@h/r.git", "https://u:xxxxx@h/r.git"),
        ("fatal: unable to access 'https://u:secret@h/r.git/': 403", "fatal: unable to access 'https://u:xxxxx@h/r.git/': 403"),
        ("https://token@h/r.git", "https://token@h/r.git"),
        ("git@h:o/r.git", "git@h:o/r.git"),
    ])
    func redacted(_ text: String, _ shown: String) {
        #expect(GitReference.redact(text) == shown)
    }

    @Test func theCommitIsTheKeyNotTheURL() throws {
        let graph = Graph()
        func v(_ url: String, keep: Bool = false) throws -> Vertex {
            graph.add(.source(.git(try GitSource(try #require(try GitReference.parse(url)), keepGitDir: keep))))
        }
        // Two URLs are two definitions (their keys are the commit: Solver.cacheKey).
        let a = try v("https://a/r.git#main"), b = try v("https://b/r.git#main")
        #expect(a.digest != b.digest)
        #expect(a.description.contains("source git https://a/r.git#main keep-git-dir=false"))
    }
}
