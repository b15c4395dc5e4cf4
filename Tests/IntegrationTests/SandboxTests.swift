import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("rbuild run, as an unprivileged user", .enabled(if: Env.enabled))
struct SandboxTests {
    @Test("the tests themselves run unprivileged: not root, no effective capabilities")
    func testProcessIsUnprivileged() throws {
        #expect(getuid() != 0)
        #expect(geteuid() != 0)
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        #expect(status.statusField("CapEff") == "0000000000000000")
    }

    @Test("uid 0, a new pid namespace, own hostname")
    func identityAndNamespaces() throws {
        let fs = try Rootfs()
        let r = try fs.sh("id -u; id -g; echo $PPID; ls /proc | grep -c '^[0-9]'; hostname; cat /etc/hostname")
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 6)
        guard lines.count == 6 else { return }
        #expect(lines[0] == "0")
        #expect(lines[1] == "0")
        #expect(lines[2] == "1", "the command's parent is the sandbox's init, pid 1")
        #expect(Int(lines[3]).map { $0 <= 4 } == true, "only the sandbox's own processes are visible: \(lines[3])")
        #expect(lines[4] == "rbuild")
        #expect(lines[5] == "rbuild")

        let named = try fs.run(["--hostname", "builder"], ["hostname"])
        #expect(named.stdout.trimmed == "builder")
    }

    @Test("seccomp, no_new_privs and Docker's default capabilities are in force")
    func securityState() throws {
        let fs = try Rootfs()
        let r = try fs.run([], ["cat", "/proc/self/status"])
        #expect(r.status == 0)
        #expect(r.stdout.statusField("Seccomp") == "2")
        #expect(r.stdout.statusField("NoNewPrivs") == "1")
        #expect(r.stdout.statusField("CapEff") == "00000000a80425fb")
        #expect(r.stdout.statusField("CapBnd") == "00000000a80425fb")
        #expect(r.stdout.statusField("CapInh") == "0000000000000000")
        #expect(r.stdout.statusField("CapAmb") == "0000000000000000")
    }

    @Test("what a hostile step tries fails", arguments: [
        ["unshare-user"], ["mount"], ["keyctl"], ["ptrace", "1"],
        ["write", "/proc/sys/kernel/domainname"], ["write", "/proc/sys/vm/drop_caches"],
        ["write", "/proc/keys"], ["write", "/proc/timer_list"], ["write", "/proc/sysrq-trigger"],
        ["write", "/proc/kcore"],
    ])
    func hostileOperationsFail(_ probe: [String]) throws {
        let fs = try Rootfs()
        let r = try fs.run([], ["/bin/probe"] + probe)
        #expect(r.stdout.hasPrefix("denied "), "\(probe) → \(r.stdout)\(r.stderr)")
        #expect(r.status == 1)
    }

    // Each call's arguments make the kernel itself answer something else (a fd, ENOTTY, EINVAL,
    // EFAULT, EAFNOSUPPORT; see probe.c), so EPERM and ENOSYS here come from the filter.
    @Test("the seccomp profile's notable rules, as the kernel applies them", arguments: [
        (["syscall", "io_uring_setup"], "denied EPERM"),
        (["keyctl"], "denied EPERM"),
        (["syscall", "userfaultfd"], "denied EPERM"),
        (["syscall", "bpf"], "denied EPERM"),
        (["syscall", "perf_event_open"], "denied EPERM"),
        (["syscall", "clone3"], "denied ENOSYS"),
        (["syscall", "af_alg"], "denied EPERM"),
        (["syscall", "af_inet"], "ok"),
        (["syscall", "tiocsti"], "denied EPERM"),
        (["syscall", "tiocsti-high"], "denied EPERM"),
        (["syscall", "tioclinux"], "denied EPERM"),
        (["syscall", "tiocgwinsz"], "denied ENOTTY"),
    ])
    func seccompRules(_ probe: [String], _ expected: String) throws {
        let fs = try Rootfs()
        let r = try fs.run([], ["/bin/probe"] + probe)
        #expect(r.stdout.trimmed == expected, "\(probe) → \(r.stdout)\(r.stderr)")
    }

    /// Whether this kernel runs i386 calls (int 0x80) from a 64-bit program (ia32 emulation).
    static let hostRunsI386: Bool = {
        (try? runProcess(Env.fixtures + "/probe-amd64", ["syscall", "i386-getpid"]))?.stdout == "ok\n"
    }()

    @Test("a call through the i386 ABI meets the same rules", .enabled(if: hostRunsI386), arguments: [
        ("i386-getpid", "ok"),
        ("i386-io_uring_setup", "denied EPERM"),
        ("i386-unshare", "denied EPERM"),
        ("i386-clone3", "denied ENOSYS"),
        ("i386-tiocsti", "denied EPERM"),
    ])
    func seccompI386(_ call: String, _ expected: String) throws {
        let fs = try Rootfs()
        let r = try fs.run([], ["/bin/probe", "syscall", call])
        #expect(r.stdout.trimmed == expected, "\(call) → \(r.stdout)\(r.stderr)")
    }

    @Test("ptrace of a process outside the sandbox fails")
    func ptraceOutside() throws {
        let fs = try Rootfs()
        let r = try fs.run([], ["/bin/probe", "ptrace", String(getpid())])
        #expect(r.stdout.hasPrefix("denied "), "\(r.stdout)")
    }

    @Test("masked paths are empty and cannot be written; /sys is read-only")
    func maskedPaths() throws {
        let fs = try Rootfs()
        let r = try fs.sh("""
            wc -c < /proc/keys; wc -c < /proc/timer_list
            ls /sys/firmware | wc -l
            touch /sys/firmware/x 2>/dev/null && echo wrote-firmware
            touch /sys/kernel/x 2>/dev/null && echo wrote-sys
            echo 1 > /proc/sys/kernel/hostname 2>/dev/null && echo wrote-proc-sys
            echo done
            """)
        #expect(r.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
                == ["0", "0", "0", "done"], "\(r.stdout)")
    }

    @Test("host files outside the rootfs are invisible")
    func hostInvisible() throws {
        let fs = try Rootfs()
        let marker = fs.dir + "/host-marker"
        try "secret".write(toFile: marker, atomically: false, encoding: .utf8)
        let r = try fs.sh("test -e \(marker) && echo visible; test -e /etc/debian_version && echo host-etc; ls / | tr '\\n' ' '")
        #expect(!r.stdout.contains("visible"))
        #expect(!r.stdout.contains("host-etc"))
        #expect(!r.stdout.contains("host-marker"))
    }

    @Test("only fds 0-2 reach the command, even when rbuild inherited more")
    func onlyStandardFds() throws {
        let fs = try Rootfs()
        let r = try runProcess("/bin/sh", ["-c",
            "exec 7</dev/null 9>/dev/null; exec \"$0\" run --rootfs \"$1\" -- /bin/probe fds", Env.binary, fs.path])
        #expect(r.stdout.trimmed == "0 1 2", "\(r.stdout)\(r.stderr)")
    }

    @Test("exit status passes through", arguments: [
        ("exit 0", Int32(0)), ("exit 7", 7), ("exit 255", 255), ("kill -KILL $$", 137), ("kill -TERM $$", 143),
    ])
    func exitStatus(_ script: String, _ expected: Int32) throws {
        let fs = try Rootfs()
        #expect(try fs.sh(script).status == expected)
    }

    @Test("with -i, stdin, stdout and stderr pass through")
    func standardStreams() throws {
        let fs = try Rootfs()
        let r = try fs.run(["-i"], ["/bin/sh", "-c", "cat; echo to-stderr >&2"], stdin: "hello\nworld\n")
        #expect(r.stdout == "hello\nworld\n")
        #expect(r.stderr == "to-stderr\n")
    }

    /// `rbuild run CMD` under `script`, so that rbuild has a controlling terminal as in an
    /// interactive shell; what the command wrote, and the session's output.
    func underTerminal(_ fs: Rootfs, _ options: String, _ script: String, typed: String? = nil) throws -> Result {
        let cmd = "\(Env.binary) run \(options) --rootfs \(fs.path) -- /bin/sh -c '\(script)'"
        var r = try runProcess("/usr/bin/script", ["-qec", cmd, "/dev/null"], stdin: typed)
        r.stdout = r.stdout.replacingOccurrences(of: "\r", with: "")   // two terminals' CRLFs
        return r
    }

    /// The caller's terminal never reaches the command (CVE-2017-5226 class): it runs in a
    /// session of its own with no controlling terminal, so /dev/tty cannot be opened and
    /// TIOCSTI could not push keystrokes into the caller's shell; stdin is /dev/null without -i.
    @Test("no controlling terminal without -t, even when rbuild has one; stdin only with -i")
    func noTerminal() throws {
        let fs = try Rootfs()
        let r = try underTerminal(fs, "", "echo tty_nr=$(cut -d\" \" -f7 /proc/self/stat); echo x > /dev/tty || echo no-dev-tty; test -t 0 || echo stdin-not-tty; cat")
        #expect(r.stdout.contains("tty_nr=0") && r.stdout.contains("no-dev-tty") && r.stdout.contains("stdin-not-tty"), "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("No such device or address"), "\(r.stdout)")
        let piped = try fs.run([], ["/bin/cat"], stdin: "not read\n")
        #expect(piped.status == 0 && piped.stdout.isEmpty, "\(piped.stdout)")
        let interactive = try fs.run(["-i"], ["/bin/cat"], stdin: "read\n")
        #expect(interactive.stdout == "read\n")
    }

    /// -t: a pseudo-terminal of the sandbox's own devpts (as runc's console), owned by the
    /// command's user, its controlling terminal, sized like rbuild's; -it relays typing and the
    /// exit status.
    @Test("-t gives a terminal of the sandbox's own; -it relays input")
    func ownTerminal() throws {
        let fs = try Rootfs()
        let r = try underTerminal(fs, "-t", "stty cols 0 rows 0 2>/dev/null; tty; echo tty_nr=$(cut -d\" \" -f7 /proc/self/stat); stat -c %U /proc/self/fd/0; echo x > /dev/tty && echo dev-tty-ok; echo TERM=$TERM")
        #expect(r.stdout.contains("/dev/pts/0\n") && r.stdout.contains("dev-tty-ok") && r.stdout.contains("TERM=xterm"), "\(r.stdout)\(r.stderr)")
        #expect(!r.stdout.contains("tty_nr=0\n"), "\(r.stdout)")
        if Env.hasRange {
            let user = try underTerminal(fs, "-t -u 1000", "stat -c %u /proc/self/fd/0")
            #expect(user.stdout.contains("1000\n"), "\(user.stdout)\(user.stderr)")
        }
        let typed = try underTerminal(fs, "-it", "read line; echo got:$line; exit 7", typed: "hello\n")
        #expect(typed.stdout.contains("got:hello"), "\(typed.stdout)\(typed.stderr)")
        #expect(typed.status == 7, "\(typed.status)")
    }

    @Test("SIGTERM sent to rbuild reaches the command")
    func signalForwarding() throws {
        let fs = try Rootfs()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Env.binary)
        p.arguments = ["run", "--rootfs", fs.path, "--", "/bin/sh", "-c",
                       "trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        _ = read(out, until: "ready")
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        #expect(p.terminationReason == .exit)
        #expect(p.terminationStatus == 42)
    }

    @Test("a zombie left by the command is reaped and the run still ends")
    func zombiesReaped() throws {
        let fs = try Rootfs()
        // Polled for up to 10 s: under load the orphan may exit just as ps looks.
        let r = try fs.sh("(sleep 0.1 &) ; i=0; while [ \"$(ps -o stat | grep -c Z)\" != 0 ] && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.1; done; "
                          + "ps -o stat | grep -c Z || true")
        #expect(r.stdout.trimmed == "0")
    }

    @Test("/dev holds only the standard devices, and they work")
    func devices() throws {
        let fs = try Rootfs()
        let r = try fs.sh("""
            ls /dev | tr '\\n' ' '; echo
            head -c 16 /dev/urandom | wc -c; head -c 4 /dev/zero | wc -c
            echo x > /dev/null && echo null-ok
            echo x > /dev/full 2>/dev/null || echo full-ok
            touch /dev/shm/a && echo shm-ok
            test -c /dev/pts/ptmx && echo pts-ok
            """)
        let lines = r.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(lines.first == "fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero")
        #expect(Array(lines.dropFirst()) == ["16", "4", "null-ok", "full-ok", "shm-ok", "pts-ok"], "\(r.stdout)")
    }

    @Test("/etc/hosts and /etc/resolv.conf are provided")
    func etcFiles() throws {
        let fs = try Rootfs()
        let r = try fs.sh("grep -c localhost /etc/hosts; test -f /etc/resolv.conf && echo resolv")
        #expect(r.stdout.split(separator: "\n") == ["2", "resolv"])
    }

    @Test("--network none: only loopback, and it is up")
    func networkNone() throws {
        let fs = try Rootfs()
        let r = try fs.run(["--network", "none"], ["/bin/sh", "-c", "ls /sys/class/net; ip -o link show lo"])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.first == "lo")
        #expect(lines.last?.contains("UP") == true, "\(r.stdout)")
        let host = try fs.run([], ["ls", "/sys/class/net"])
        #expect(host.stdout.split(separator: "\n").count >= 1)
    }

    @Test("--read-only, --workdir, --env, --mount")
    func options() throws {
        let fs = try Rootfs()
        let ro = try fs.sh("touch /x 2>/dev/null && echo wrote; touch /dev/shm/y && echo shm", ["--read-only"])
        #expect(ro.stdout.trimmed == "shm")

        let wd = try fs.run(["--workdir", "/srv/app", "--env", "GREETING=hi there"], ["/bin/sh", "-c", "pwd; echo $GREETING; echo $HOME"])
        #expect(wd.stdout.split(separator: "\n") == ["/srv/app", "hi there", "/root"])

        let shared = fs.dir + "/shared"
        try FileManager.default.createDirectory(atPath: shared, withIntermediateDirectories: true)
        try "from-host".write(toFile: shared + "/in", atomically: false, encoding: .utf8)
        let rw = try fs.sh("cat /mnt/data/in; echo from-sandbox > /mnt/data/out",
                           ["--mount", "type=bind,source=\(shared),target=/mnt/data"])
        #expect(rw.stdout == "from-host")
        #expect((try? String(contentsOfFile: shared + "/out", encoding: .utf8)) == "from-sandbox\n")

        let readonly = try fs.sh("echo x > /mnt/data/other 2>/dev/null || echo refused",
                                 ["--mount", "type=bind,source=\(shared),target=/mnt/data,readonly"])
        #expect(readonly.stdout.trimmed == "refused")
        #expect(!FileManager.default.fileExists(atPath: shared + "/other"))
    }

    @Test("a symlink in the image cannot send a mount point outside the rootfs")
    func symlinkedMountPointStaysInside() throws {
        let fs = try Rootfs()
        let outside = fs.dir + "/outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        // /etc/hosts → a host path: the sandbox must create/bind inside its root, never there.
        unlink(fs.path + "/etc/hosts")
        symlink(outside + "/hosts", fs.path + "/etc/hosts")
        symlink(outside, fs.path + "/escape")
        let r = try fs.run(["--workdir", "/escape/work"], ["/bin/sh", "-c", "grep -c localhost /etc/hosts; pwd"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.split(separator: "\n").map(String.init) == ["2", outside + "/work"], "\(r.stdout)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: outside).isEmpty, "nothing created outside the rootfs")
        #expect(FileManager.default.fileExists(atPath: fs.path + outside + "/hosts"), "the link's target was made inside the root")
    }

    @Test("subordinate range: --user 1000:1000 works and owns its files",
          .enabled(if: Env.hasRange))
    func userWithRange() throws {
        let fs = try Rootfs()
        let r = try fs.sh("id; touch /tmp/f; stat -c %u:%g /tmp/f; grep CapEff /proc/self/status", ["--user", "1000:1000"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("uid=1000(app) gid=1000(app)"), "\(r.stdout)")
        #expect(r.stdout.contains("1000:1000"))
        #expect(r.stdout.contains("CapEff:\t0000000000000000"))
        let named = try fs.run(["--user", "app:staff"], ["id"])
        #expect(named.stdout.trimmed == "uid=1000(app) gid=50(staff) groups=50(staff)" || named.stdout.hasPrefix("uid=1000(app) gid=50(staff)"))
        let nobody = try fs.run(["--user", "nobody"], ["id", "-u"])
        #expect(nobody.stdout.trimmed == "65534")
    }

    // Without a range only uid 0 exists: the calls succeed, the process reads back the ids it
    // asked for (FakeIDs) and files stay 0:0 (apt and dpkg need this). With a range they are real.
    @Test("id changes and chown succeed: real with a range, faked without")
    func idChanges() throws {
        let fs = try Rootfs()
        let r = try fs.sh("touch /tmp/f && /bin/probe setids /tmp/f")
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        let ids = Env.hasRange ? "uid=42 euid=42 gid=42 owner=42:42" : "uid=42 euid=42 gid=42 owner=0:0"
        #expect(r.stdout.split(separator: "\n") == ["chown ok", "setgroups ok", "setresgid ok", "setresuid ok", ids[...]],
                "\(r.stdout)")
    }

    // scripts/test stages the fixtures as root: a root-owned 0755 tree whose owner the sandbox
    // does not map, the shared-root case. (A tree of our own with its write bits removed is no
    // such case: root in the sandbox owns it and writes it, as before.)
    @Test("a root nobody in the sandbox may write: mount points come from a throw-away overlay, the directory is untouched")
    func unwritableRootfs() throws {
        let dir = Env.fixtures + "/rootfs-amd64"
        var st = stat()
        guard stat(dir, &st) == 0, st.st_uid == 0, access(dir, W_OK) != 0 else {
            print("unwritableRootfs: skipped: \(dir) is not a root-owned tree we cannot write (scripts/test as root stages one)")
            return
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/etc/hosts"), "the fixture has no /etc/hosts")
        func listing() throws -> String {
            try runProcess("/bin/sh", ["-c", "cd \"$0\" && find . -printf '%p %m %U:%G %s %T@\\n' | sort", dir]).stdout
        }
        let before = try listing()
        let r = try rbuild(["run", "--rootfs", dir, "--workdir", "/srv/app", "--", "cat", "/etc/hosts", "/etc/resolv.conf"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("localhost"), "\(r.stdout)")
        let w = try rbuild(["run", "--rootfs", dir, "--", "/bin/sh", "-c", "echo x > /new && cat /new"])
        #expect(w.stdout.trimmed == "x", "writes land in the overlay: \(w.stderr)")
        #expect(try listing() == before)
    }

    @Test("no subordinate range: --user 1000 fails and says how to add a range",
          .enabled(if: !Env.hasRange))
    func userWithoutRange() throws {
        let fs = try Rootfs()
        let r = try fs.run(["--user", "1000"], ["id"])
        #expect(r.status == 125)
        #expect(r.stderr.contains("uid 1000 does not exist in the sandbox"), "\(r.stderr)")
        #expect(r.stderr.contains("--add-subuids"))
        #expect(r.stdout.isEmpty)
    }

    @Test("bad input: one clear line, non-zero exit, nothing left behind", arguments: [
        (["--user", "ghost"], ["true"], Int32(125), "unable to find user ghost"),
        (["--user", "::"], ["true"], 125, "invalid --user '::'"),
        (["--mount", "type=volume,source=/tmp,target=/x"], ["true"], 125, "type=volume is not supported"),
        (["--mount", "type=bind,source=/tmp"], ["true"], 125, "target= must be an absolute path"),
        (["--mount", "type=bind,source=/does/not/exist,target=/x"], ["true"], 125, "source /does/not/exist does not exist"),
        (["--network", "bridge"], ["true"], 125, "--network bridge: expected host, none or default"),
        ([], ["/bin/foo"], 127, "executable file not found in rootfs: /bin/foo"),
        ([], ["nosuchcmd"], 127, "executable file not found in $PATH"),
        ([], ["/etc/passwd"], 126, "permission denied"),
        (["--mount", "type=bind,source=/tmp,target=/bin/busybox"], ["true"], 125,
         "sandbox setup failed at bind /tmp on /bin/busybox: Invalid argument (rootfs "),
        // The same failure while the network helper starts (the root is prepared meanwhile): the
        // sandbox's own report, not the helper's failure to join a namespace that went with it.
        (["--network", "default", "--mount", "type=bind,source=/tmp,target=/bin/busybox"], ["true"], 125,
         "sandbox setup failed at bind /tmp on /bin/busybox: Invalid argument (rootfs "),
        (["--network", "default", "--workdir", "/etc/passwd"], ["true"], 125, "sandbox setup failed at entering workdir /etc/passwd"),
    ] as [([String], [String], Int32, String)])
    func badInput(_ options: [String], _ argv: [String], _ status: Int32, _ message: String) throws {
        let fs = try Rootfs()
        let (scratch, env) = try fs.privateTempDir()
        let r = try rbuild(["run", "--rootfs", fs.path] + options + ["--"] + argv, environment: env)
        #expect(r.status == status, "\(r.stderr)")
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(r.stderr)")
        #expect(r.stderr.hasPrefix("rbuild: "))
        #expect(r.stderr.contains(message), "\(r.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch).isEmpty, "the run's scratch directory was removed")
    }

    @Test("a run leaves nothing behind in the temp dir")
    func leavesNoTempFiles() throws {
        let fs = try Rootfs()
        let (scratch, env) = try fs.privateTempDir()
        let r = try rbuild(["run", "--rootfs", fs.path, "--", "/bin/cat", "/etc/hosts"], environment: env)
        #expect(r.status == 0)
        #expect(r.stdout.contains("localhost"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch) == [])
    }

    @Test("a missing rootfs is named")
    func missingRootfs() throws {
        let r = try rbuild(["run", "--rootfs", "/no/such/rootfs", "--", "true"])
        #expect(r.status == 125)
        #expect(r.stderr == "rbuild: root filesystem /no/such/rootfs not found: No such file or directory\n")
    }

    @Test("rbuild info answers every question")
    func info() throws {
        let r = try rbuild(["info", "--format", "json"])
        #expect(r.status == 0)
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let checks = (json?["checks"] as? [[String: Any]])?.compactMap { $0["name"] as? String } ?? []
        #expect(checks == ["kernel", "user namespaces", "subordinate ids", "newuidmap/newgidmap",
                           "overlay in user namespace", "fuse-overlayfs", "binfmt_misc in user namespace",
                           "qemu-user-static", "host binfmt handlers", "seccomp", "cgroup v2 delegation", "network helper"])
        let text = try rbuild(["info"])
        #expect(text.stdout.contains("user namespaces"))
        #expect(text.stdout.contains(Env.hasRange ? "identity mapping: subordinate" : "identity mapping: single"))
    }
}

