import Foundation
import RBuildOCI
import RBuildSystem
import Synchronization

/// A source op's git repository (ADD of a git URL, a git build context): what to fetch and how
/// its files land. Its cache key is the commit the ref resolves to (plus `subdir`, `keepGitDir`,
/// `mtimeCommit`), never the URL: the same commit from a mirror is the same content.
public struct GitSource: Sendable, Hashable {
    /// What git is given (a password in it never reaches a message or the state dir).
    public var remote: String
    /// A branch, tag, full ref or full commit; empty: the remote's default branch.
    public var ref: String
    /// A directory inside the repository whose files are the source ("" for all of it).
    public var subdir: String
    /// Keep `.git` (only without a subdir, as BuildKit).
    public var keepGitDir: Bool
    /// The commit (a hex prefix of it, or of the annotated tag's object) the ref must resolve to.
    public var checksum: String?
    /// Files and directories get the commit's time; else the time they were checked out.
    public var mtimeCommit: Bool
    /// `fetch-by-commit`: the checksum is the commit; no `ls-remote`.
    public var fetchByCommit: Bool

    /// The source a parsed URL names, with ADD's `--keep-git-dir` and `--checksum` (which must
    /// agree with the URL's query, as BuildKit requires).
    public init(_ r: GitReference, keepGitDir: Bool? = nil, checksum: String? = nil) throws {
        if let a = keepGitDir, let b = r.keepGitDir, a != b { throw SolveError("\(r.display): inconsistent keep-git-dir configuration") }
        if let a = checksum, let b = r.checksum, a != b { throw SolveError("\(r.display): checksum mismatch \"\(a)\" != \"\(b)\"") }
        let sum = checksum ?? r.checksum
        if let sum, sum.isEmpty || !sum.allSatisfy(\.isHexDigit) {
            throw SolveError("invalid checksum \(sum) for Git URL \(r.display), expected hex commit hash")
        }
        if r.submodules == true {
            throw SolveError("\(r.display): submodules=true: rbuild does not fetch git submodules yet")
        }
        if r.fetchByCommit, !GitSource.isCommit(sum ?? "") {
            throw SolveError("\(r.display): fetch-by-commit requires a full commit SHA checksum, got \"\(sum ?? "")\"")
        }
        remote = r.remote
        ref = r.ref
        subdir = r.subdir
        self.keepGitDir = keepGitDir ?? r.keepGitDir ?? false
        self.checksum = sum?.lowercased()
        mtimeCommit = r.mtime == "commit"
        fetchByCommit = r.fetchByCommit
    }

    /// How messages name it: the remote (password hidden), `#REF:SUBDIR`.
    public var display: String {
        GitReference.redact(remote) + (ref.isEmpty && subdir.isEmpty ? "" : "#" + ref) + (subdir.isEmpty ? "" : ":" + subdir)
    }

    /// A full sha1 or sha256 object name.
    static func isCommit(_ s: String) -> Bool {
        (s.count == 40 || s.count == 64) && s.allSatisfy { $0.isHexDigit && !$0.isUppercase }
    }
}

/// What a ref resolved to on the remote.
public struct GitResolved: Sendable, Hashable {
    /// The commit (an annotated tag peeled).
    public var commit: String
    /// The ref it was found under (`refs/heads/main`, `refs/tags/v1`); nil for a commit asked for
    /// by its sha.
    public var fullRef: String?
}

/// The state dir's copies of git remotes, fetched through the system `git` so that the user's git
/// config, credential helpers and ~/.ssh apply: `git/<sha256 of the remote>/`, a bare repository,
/// shallow where the server allows it. A ref is resolved with `git ls-remote` (no object moves);
/// a commit the repository has is never fetched again. A repository appears (renamed into place)
/// only once its first fetch succeeded; `git/<key>.lock` (flock) serialises the rbuild processes
/// using one.
public final class GitRepositories: Sendable {
    public let root: String
    let tmp: String

    public init(layout: StateLayout) {
        root = layout.git
        tmp = layout.tmp
    }

    // MARK: - Resolving

    /// The commit `source.ref` names now (`git ls-remote`); a full sha names itself. Checked
    /// against the source's checksum.
    public func resolve(_ source: GitSource) throws -> GitResolved {
        if source.fetchByCommit, let sum = source.checksum {
            return GitResolved(commit: sum, fullRef: source.ref.isEmpty ? nil : source.ref)
        }
        if GitSource.isCommit(source.ref.lowercased()) {
            let commit = source.ref.lowercased()
            try check(source, commit, nil)
            return GitResolved(commit: commit, fullRef: nil)
        }
        let patterns = source.ref.isEmpty ? ["HEAD"] : [source.ref, source.ref + "^{}"]
        let out = try git(["ls-remote"] + (source.ref.isEmpty ? ["--symref"] : []) + ["--", source.remote] + patterns,
                          failure: "cannot reach the git repository \(GitReference.redact(source.remote))")
        var byRef: [String: String] = [:]
        var headTarget: String?
        for line in out.split(separator: "\n") {
            let f = line.split(separator: "\t", maxSplits: 1).map(String.init)
            guard f.count == 2 else { continue }
            if f[0].hasPrefix("ref: ") { headTarget = String(f[0].dropFirst(5)); continue }
            byRef[f[1]] = f[0]
        }
        if source.ref.isEmpty {
            guard let sha = byRef["HEAD"] else {
                throw SolveError("the git repository \(GitReference.redact(source.remote)) has no default branch (HEAD); name a ref with #REF")
            }
            try check(source, sha, nil)
            return GitResolved(commit: sha, fullRef: headTarget)
        }
        // BuildKit's order (git checkout's): the ref as a full name, a branch, then a tag.
        let bare = source.ref.hasPrefix("refs/") ? String(source.ref.dropFirst(5)) : source.ref
        let full = "refs/" + bare
        let head = "refs/heads/" + (source.ref.hasPrefix("refs/heads/") ? String(source.ref.dropFirst(11)) : source.ref)
        let tag = "refs/tags/" + (source.ref.hasPrefix("refs/tags/") ? String(source.ref.dropFirst(10)) : source.ref)
        var found: (sha: String, ref: String)?
        for r in [full, head] where found == nil {
            if let sha = byRef[r] { found = (sha, r) }
        }
        var tagObject: String?
        if found == nil, let sha = byRef[tag] {
            // An annotated tag: its object, and the commit it points to.
            if let peeled = byRef[tag + "^{}"] {
                tagObject = sha
                found = (peeled, tag)
            } else {
                found = (sha, tag)
            }
        }
        guard let found else {
            throw SolveError("the git repository \(GitReference.redact(source.remote)) has no branch, tag or ref \"\(source.ref)\"")
        }
        guard GitSource.isCommit(found.sha) else { throw SolveError("git ls-remote \(GitReference.redact(source.remote)): invalid commit sha \(found.sha)") }
        try check(source, found.sha, tagObject)
        return GitResolved(commit: found.sha, fullRef: found.ref)
    }

    /// `--checksum`: the commit (or the annotated tag object) must start with it.
    func check(_ source: GitSource, _ commit: String, _ tagObject: String?) throws {
        guard let want = source.checksum else { return }
        if commit.hasPrefix(want) || (tagObject?.hasPrefix(want) ?? false) { return }
        throw SolveError("checksum mismatch for \(source.display): expected commit \(want), but the ref resolves to \(commit)")
    }

    // MARK: - Fetching and checking out

    /// The files of `resolved.commit` into the empty directory `dir` (`source.subdir` is left
    /// to the reader): fetched first when the cached repository lacks the commit.
    public func checkout(_ source: GitSource, _ resolved: GitResolved, into dir: String) throws {
        guard mkdir(dir, 0o755) == 0 || errno == EEXIST else { throw SystemError("mkdir", path: dir) }
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let key = Digest.of(Array(source.remote.utf8)).hex
        let lock = open(root + "/" + key + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lock >= 0 else { throw SystemError("open", path: root + "/" + key + ".lock") }
        defer { close(lock) }   // closing drops the flock
        guard retryingOnInterrupt({ flock(lock, LOCK_EX) }) == 0 else { throw SystemError("flock", path: root + "/" + key + ".lock") }
        let repo = root + "/" + key
        if access(repo, F_OK) != 0 {
            // A new repository is made aside and renamed in once it holds the commit.
            let fresh = try makeTemporaryDirectory(in: tmp, prefix: "git-")
            do {
                _ = try git(["init", "--bare", "-q", fresh], failure: "git init")
                try fetch(source, resolved, into: fresh)
                guard rename(fresh, repo) == 0 else { throw SystemError("rename", path: repo) }
            } catch {
                try? removeTree(atPath: fresh)
                throw error
            }
        } else if !(has(resolved.commit, in: repo) && hasRef(source, resolved, in: repo)) {
            try fetch(source, resolved, into: repo)
        }
        if source.keepGitDir && source.subdir.isEmpty {
            // A commit asked for by its sha is fetched into the kept .git by this ref.
            _ = try git(["--git-dir=" + repo, "update-ref", "refs/rbuild/commits/" + resolved.commit, resolved.commit],
                        failure: "git update-ref")
            try checkoutKeepingGitDir(source, resolved, repo: repo, into: dir)
        } else {
            // A private index: the shared repository is only read.
            let index = try makeTemporaryDirectory(in: tmp, prefix: "git-index-")
            defer { try? removeTree(atPath: index) }
            let env = ["GIT_INDEX_FILE": index + "/index"]
            _ = try git(["--git-dir=" + repo, "read-tree", resolved.commit], env: env, failure: "git read-tree \(resolved.commit)")
            _ = try git(["--git-dir=" + repo, "--work-tree=" + dir, "checkout-index", "-a"], env: env, umask: true,
                        failure: "checking out \(source.display) (\(resolved.commit))")
        }
        if source.mtimeCommit {
            let time = try git(["--git-dir=" + repo, "log", "-1", "--format=%ct", resolved.commit], failure: "git log")
            guard let t = Int(time.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw SolveError("git log \(resolved.commit): no commit time in \"\(time)\"")
            }
            try setTimes(dir, seconds: t)
        }
    }

    /// Fetches the commit into `repo`: by its ref, shallow (`--depth=1`), else the whole ref
    /// (dumb http serves no shallow fetch), else by its sha, else every branch and tag.
    func fetch(_ source: GitSource, _ r: GitResolved, into repo: String) throws {
        let base = ["--git-dir=" + repo, "-c", "gc.auto=0", "fetch", "-q", "--no-tags", "--no-write-fetch-head"]
        var attempts: [[String]] = []
        if let ref = r.fullRef, !source.fetchByCommit {
            let dest = ref.hasPrefix("refs/") ? ref : "refs/rbuild/" + ref
            attempts.append(base + ["--depth=1", "--", source.remote, "+\(ref):\(dest)"])
            attempts.append(base + ["--", source.remote, "+\(ref):\(dest)"])
        }
        attempts.append(base + ["--depth=1", "--", source.remote, "+\(r.commit):refs/rbuild/commits/\(r.commit)"])
        attempts.append(base + ["--tags", "--", source.remote, "+refs/heads/*:refs/rbuild/heads/*"])
        var first: Error?   // the first attempt's is the most telling (later ones ask for more)
        for args in attempts {
            do {
                _ = try git(args, failure: "cannot fetch \(source.display) from \(GitReference.redact(source.remote))")
                if has(r.commit, in: repo) { return }
            } catch {
                if first == nil { first = error }
            }
        }
        throw first ?? SolveError("the git repository \(GitReference.redact(source.remote)) does not have commit \(r.commit) (the ref moved while fetching? build again)")
    }

    func has(_ commit: String, in repo: String) -> Bool {
        (try? git(["--git-dir=" + repo, "cat-file", "-e", commit + "^{commit}"], failure: "")) != nil
    }

    /// A kept `.git` takes the ref from the repository: it must be there, and point at the commit.
    func hasRef(_ source: GitSource, _ r: GitResolved, in repo: String) -> Bool {
        guard source.keepGitDir, let ref = r.fullRef, ref.hasPrefix("refs/") else { return true }
        let sha = try? git(["--git-dir=" + repo, "rev-parse", "-q", "--verify", ref + "^{commit}"], failure: "")
        return sha?.trimmingCharacters(in: .whitespacesAndNewlines) == r.commit
    }

    /// As BuildKit: a repository of its own in `dir` holding the one commit (depth 1) under its
    /// ref, HEAD detached at it, origin the remote (password hidden), no reflog or FETCH_HEAD.
    func checkoutKeepingGitDir(_ source: GitSource, _ r: GitResolved, repo: String, into dir: String) throws {
        let g = ["-C", dir]
        let what = "checking out \(source.display) with its .git"
        _ = try git(g + ["-c", "init.defaultBranch=master", "init", "-q"], umask: true, failure: what)
        _ = try git(g + ["remote", "add", "origin", "file://" + repo], failure: what)
        let pull: String
        if let ref = r.fullRef, ref.hasPrefix("refs/") {
            pull = "\(ref):\(ref)"
        } else {
            pull = "refs/rbuild/commits/" + r.commit
        }
        _ = try git(g + ["-c", "protocol.file.allow=always", "fetch", "-q", "-u", "--no-tags", "--depth=1", "--", "origin", pull],
                    umask: true, failure: what)
        _ = try git(g + ["-c", "advice.detachedHead=false", "checkout", "-q", r.commit], umask: true, failure: what)
        _ = try git(g + ["remote", "set-url", "origin", GitReference.redact(source.remote)], failure: what)
        _ = try git(g + ["reflog", "expire", "--all", "--expire=now"], failure: what)
        unlink(dir + "/.git/FETCH_HEAD")
    }

    /// Every entry under `dir` (and `dir`) gets mtime and atime `seconds`, symlinks themselves.
    func setTimes(_ dir: String, seconds: Int) throws {
        var times = [timespec(tv_sec: seconds, tv_nsec: 0), timespec(tv_sec: seconds, tv_nsec: 0)]
        func walk(_ fd: Int32, _ path: String) throws {
            for name in try sortedNames(fd, path: path) {
                var st = stat()
                guard fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { throw SystemError("fstatat", path: path + "/" + name) }
                if (st.st_mode & S_IFMT) == S_IFDIR {
                    let sub = try FileDescriptor(at: fd, name, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW, path: path + "/" + name)
                    try walk(sub.rawValue, path + "/" + name)
                    sub.close()
                }
                utimensat(fd, name, &times, AT_SYMLINK_NOFOLLOW)
            }
        }
        let top = try FileDescriptor(at: AT_FDCWD, dir, flags: O_RDONLY | O_DIRECTORY, path: dir)
        try walk(top.rawValue, dir)
        futimens(top.rawValue, &times)
        top.close()
    }

    // MARK: - Running git

    /// Runs the system git with the user's environment (config, credential helpers, ssh), never
    /// asking on a terminal; its stdout, or an error saying `failure` and git's last words.
    func git(_ args: [String], env extra: [String: String] = [:], umask: Bool = false, failure: String) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        // The checkout's modes follow git's rules (0644, 0755), not the caller's umask. A session
        // of its own: ssh cannot ask for a host key or passphrase on the terminal the progress
        // display owns (git itself is told not to, GIT_TERMINAL_PROMPT=0); keys come from an agent.
        p.arguments = ["-c", (umask ? "umask 022; " : "") + "exec setsid -w git \"$@\"", "git"] + args
        var env = ProcessInfo.processInfo.environment
        env["GIT_TERMINAL_PROMPT"] = "0"
        env["LC_ALL"] = "C"
        env["GIT_ALLOW_PROTOCOL"] = env["GIT_ALLOW_PROTOCOL"] ?? "http:https:git:ssh:file"
        for (k, v) in extra { env[k] = v }
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = out
        p.standardError = err
        do { try p.run() } catch { throw SolveError("\(failure): cannot run /bin/sh: \(error)") }
        let errData = Mutex(Data())
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            errData.withLock { $0 = err.fileHandleForReading.readDataToEndOfFile() }
            done.signal()
        }
        let output = out.fileHandleForReading.readDataToEndOfFile()
        done.wait()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            if p.terminationStatus == 127 {
                throw SolveError("\(failure): git is not installed (Debian: apt-get install git)")
            }
            let text = errData.withLock { String(decoding: $0, as: UTF8.self) }
            let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            let said = lines.suffix(2).map { GitReference.redact($0) }.joined(separator: "; ")
            throw SolveError("\(failure): \(said.isEmpty ? "git exited with status \(p.terminationStatus)" : said)")
        }
        return String(decoding: output, as: UTF8.self)
    }
}
