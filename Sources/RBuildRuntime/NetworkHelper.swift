#if canImport(Glibc)
import Glibc
#endif
import CRBuildChild
import Foundation
import RBuildSystem

/// The user-mode network stack behind `NetworkMode.isolated`: a host program that gives a
/// sandbox's own network namespace a tap device and turns what the sandbox sends through it into
/// ordinary sockets of this unprivileged process. A RUN step so reaches the outside as rbuild
/// itself does, but never the host's loopback (127.0.0.1 services, abstract unix sockets): what
/// BuildKit (its own namespace), rootless BuildKit (rootlesskit with the host loopback disabled)
/// and rootless buildah (pasta, slirp4netns) give their steps too. One helper per sandbox,
/// started between the id maps and the child's go-ahead, stopped when the sandbox is reaped.
///
/// Measured on the project's test machine (Linux 6.18, 2 cores, as the unprivileged test users,
/// release build), from the spawn until the helper reports the namespace configured, 40 starts:
/// - slirp4netns 1.2.0 (libslirp 4.7.0), `--configure --mtu=65520 --disable-host-loopback
///   --enable-sandbox --enable-seccomp`: 0.3 ms to spawn, 3.9 ms to ready (2.4–6.5); the
///   sandbox and seccomp options cost about 0.8 of those.
/// - pasta (Debian 12's passt 0.0~git20230309), `--config-net --ipv4-only -t none -u none
///   -T none -U none --no-map-gw`: 0.8 ms to spawn, 18.3 ms to ready (14.8–22.3).
/// A whole `RUN true` step costs 4.2–4.8 ms more with slirp4netns than with `--network=none`,
/// 21–22 ms more with pasta (scripts/bench/mounts, both identity modes). Stopping is off that
/// path (see `NetworkAttachment.stop`).
///
/// slirp4netns is preferred: it is faster, `--exit-fd` stops it when rbuild goes away (even by
/// SIGKILL), `--disable-host-loopback` keeps 10.0.2.2 from reaching the host's 127.0.0.1, and
/// its sandbox and seccomp options confine the code that parses the step's packets. pasta is
/// the fallback: `-T none -U none --no-map-gw` keep the host's loopback out (no forwarding into
/// the host's namespace, no gateway mapped to it), `-t none -u none` publish nothing of the
/// sandbox on the host. Debian 12's pasta does not quit when its namespace goes away (checked:
/// it runs on with its target dead, in the background and with `--foreground` alike), so it
/// runs in the foreground as our child and `rb_spawn_helper`'s PR_SET_PDEATHSIG stops it if
/// rbuild dies; `--runas` with our own ids keeps it from changing credentials, which would
/// clear that. `RBUILD_NETWORK_HELPER=slirp4netns|pasta` forces one.
public struct NetworkHelper: Sendable {
    public enum Kind: String, Sendable, CaseIterable, Codable {
        case slirp4netns
        case pasta

        /// The Debian package that installs it.
        public var package: String { self == .slirp4netns ? "slirp4netns" : "passt" }

        /// Where a sandbox sends DNS queries: the helper's own forwarder, which relays them to
        /// the host's resolvers (a loopback one, such as systemd-resolved's, included).
        /// slirp4netns answers on 10.0.2.3; pasta forwards what goes to its `--dns-forward`
        /// address (podman's choice of a link-local one).
        var nameserver: String { self == .slirp4netns ? "10.0.2.3" : "169.254.1.1" }
    }

    public let kind: Kind
    /// The program's absolute path.
    public let path: String

    /// Forces a helper: `slirp4netns` or `pasta`.
    public static let forceVariable = "RBUILD_NETWORK_HELPER"

    /// How long a helper may take to configure the namespace. It takes milliseconds; a loaded
    /// CI machine gets slack.
    static let readyTimeoutMilliseconds: Int32 = 10_000

    /// The helper isolated sandboxes use in this process, or why there is none (looked for once).
    public static let current: Result<NetworkHelper, RuntimeError> =
        find(force: ProcessInfo.processInfo.environment[forceVariable])

    /// Picks the helper: the one `force` names, else the first of slirp4netns and pasta found on
    /// PATH (or in the usual sbin/bin directories); then checks that `tunDevice` can be opened,
    /// as both need it.
    package static func find(force: String?, locate: (String) -> String? = findExecutable,
                             tunDevice: String = "/dev/net/tun") -> Result<NetworkHelper, RuntimeError> {
        let helper: NetworkHelper
        if let force, !force.isEmpty {
            guard let kind = Kind(rawValue: force) else {
                return .failure(RuntimeError(.network, "\(forceVariable)=\(force): expected slirp4netns or pasta"))
            }
            guard let path = locate(kind.rawValue) else {
                return .failure(RuntimeError(.network, "\(forceVariable)=\(force), but \(kind.rawValue) is not installed: apt install \(kind.package)"))
            }
            helper = NetworkHelper(kind: kind, path: path)
        } else if let kind = Kind.allCases.first(where: { locate($0.rawValue) != nil }), let path = locate(kind.rawValue) {
            helper = NetworkHelper(kind: kind, path: path)
        } else {
            return .failure(RuntimeError(.network,
                "RUN steps get a network of their own through a user-mode network helper, and neither slirp4netns nor pasta is installed: "
                + "apt install slirp4netns (or passt, for pasta). Without one, only --network none works; the fallback is the host's network: "
                + "rbuild build --network host --allow network.host"))
        }
        if let problem = tunProblem(tunDevice, helper: helper.kind) {
            return .failure(RuntimeError(.network, problem))
        }
        return .success(helper)
    }

    /// nil when the tun device opens for reading and writing, else what is wrong and what to do.
    static func tunProblem(_ device: String, helper: Kind) -> String? {
        let fd = open(device, O_RDWR | O_CLOEXEC)
        if fd >= 0 {
            close(fd)
            return nil
        }
        let err = errno
        let fallback = "or use --network none, or the host's network: --network host --allow network.host"
        if err == ENOENT {
            return "\(helper.rawValue) needs \(device) for a RUN step's own network, and it does not exist: load the tun module (modprobe tun), \(fallback)"
        }
        var st = stat()
        // The mode only: inside rbuild's own user namespace the host's root shows as nobody.
        let shape = stat(device, &st) == 0 ? " (its mode is 0\(String(st.st_mode & 0o777, radix: 8)))" : ""
        return "\(helper.rawValue) cannot open \(device): \(errnoText(err))\(shape); a RUN step's own network needs it: "
            + "as root, chmod 0666 \(device) (scripts/setup does), \(fallback)"
    }

    /// The program's version as it reports it (`1.2.0`), for `rbuild info`; nil when it does not
    /// know its own (Debian 12's pasta says `unknown version`).
    public func version() -> String? {
        guard let (status, output) = try? runProgram(path, ["--version"]), status == 0 else { return nil }
        // pasta also tells stderr each time it cannot reach syslog.
        guard let line = output.split(separator: "\n").first(where: { !$0.hasPrefix("Failed to send") }) else { return nil }
        var text = line.trimmingCharacters(in: .whitespaces)
        for prefix in ["slirp4netns version ", "pasta "] where text.hasPrefix(prefix) { text = String(text.dropFirst(prefix.count)) }
        return text.isEmpty || text == "unknown version" ? nil : text
    }

    /// The arguments that connect the network namespace of `pid`. slirp4netns reports ready on
    /// fd 3 and quits when fd 4 reaches EOF; pasta writes its pid to `readyPath` once the
    /// namespace is configured.
    func arguments(pid: pid_t, readyPath: String, uid: uid_t, gid: gid_t) -> [String] {
        switch kind {
        case .slirp4netns:
            return [path, "--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox", "--enable-seccomp",
                    "--ready-fd=3", "--exit-fd=4", String(pid), "tap0"]
        case .pasta:
            // IPv4 only, as slirp4netns is configured here (and BuildKit's default network is):
            // it also starts 8 ms sooner (24 against 32 ms, measured here).
            return [path, "--foreground", "--quiet", "--config-net", "--ipv4-only",
                    "--tcp-ports", "none", "--udp-ports", "none", "--tcp-ns", "none", "--udp-ns", "none", "--no-map-gw",
                    "--dns-forward", kind.nameserver, "--runas", "\(uid):\(gid)", "--pid", readyPath, String(pid)]
        }
    }

    /// Connects the network namespace of `pid`, a sandbox waiting for its go-ahead, to the
    /// outside, and returns once the helper reports the namespace configured (tap device up,
    /// address, default route). `scratch` is the sandbox's private directory (pasta's ready
    /// signal is a FIFO there). Stop the helper with `NetworkAttachment.stop` once the sandbox is
    /// reaped; releasing the attachment stops it too.
    func attach(to pid: pid_t, scratch: String) throws -> NetworkAttachment {
        var owned: [Int32] = []          // ours for as long as the helper runs
        var childSide: [Int32] = []      // handed to the helper: closed here once it started
        var handedOver = false
        defer {
            childSide.forEach { close($0) }
            if !handedOver { owned.forEach { close($0) } }
        }
        func pipePair() throws -> (read: Int32, write: Int32) {
            try HelperProcess.pipe(for: kind.rawValue, code: .network)
        }

        let log = rb_memfd("rbuild-" + kind.rawValue)
        guard log >= 0 else { throw RuntimeError(.network, "cannot start \(kind.rawValue): memfd_create: \(errnoText(-log))") }
        owned.append(log)
        let ready: Int32
        var readyPath = ""
        defer { if !readyPath.isEmpty { unlink(readyPath) } }
        switch kind {
        case .slirp4netns:
            let readyPipe = try pipePair()
            owned.append(readyPipe.read)
            childSide.append(readyPipe.write)
            // Our end of the exit pipe is close-on-exec, so no other child holds it: when this
            // process dies, slirp4netns sees EOF and quits.
            let exitPipe = try pipePair()
            childSide.append(exitPipe.read)
            owned.append(exitPipe.write)
            ready = readyPipe.read
        case .pasta:
            readyPath = scratch + "/pasta.ready"
            guard mkfifo(readyPath, 0o600) == 0 else {
                throw RuntimeError(.network, "cannot start pasta: mkfifo \(readyPath): \(errnoText(errno))")
            }
            // Opened for reading first (non-blocking), so that pasta's open for writing does not wait.
            ready = open(readyPath, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
            guard ready >= 0 else { throw RuntimeError(.network, "cannot open \(readyPath): \(errnoText(errno))") }
            owned.append(ready)
        }

        let argv = arguments(pid: pid, readyPath: readyPath, uid: getuid(), gid: getgid())
        // Nothing of rbuild's environment (a build's secrets, one day) reaches the helper.
        let helperPID = try HelperProcess.spawn(path, argv, environment: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                                                fds: childSide, log: log, dieWithThread: true, code: .network).pid
        childSide.forEach { close($0) }
        childSide = []
        let pidfd = rb_pidfd_open(helperPID)
        let attachment = NetworkAttachment(kind: kind, pid: helperPID, pidfd: pidfd, fds: owned)
        handedOver = true
        guard pidfd >= 0 else {
            throw RuntimeError(.network, "cannot watch \(kind.rawValue): pidfd_open: \(errnoText(-pidfd))")
        }
        try attachment.waitReady(ready, log: log)
        return attachment
    }
}

/// One running helper, connected to one sandbox's namespace. Used by the thread that runs the
/// sandbox only.
final class NetworkAttachment {
    let kind: NetworkHelper.Kind
    let pid: pid_t
    private let pidfd: Int32
    private var fds: [Int32]
    private var reaped = false
    private var stopped = false

    init(kind: NetworkHelper.Kind, pid: pid_t, pidfd: Int32, fds: [Int32]) {
        self.kind = kind
        self.pid = pid
        self.pidfd = pidfd
        self.fds = fds
    }

    deinit { stop() }

    /// Kills the helper (it keeps no state worth a clean exit: the namespace goes with the
    /// sandbox) and reaps it on a thread of its own. Its exit closes the tap device, and the
    /// kernel's unregistering of a network device waits for RCU grace periods: 14–22 ms for
    /// slirp4netns, 32–60 ms for pasta measured here, which the step need not wait for.
    /// Idempotent.
    func stop() {
        guard !stopped else { return }
        stopped = true
        if !reaped {
            kill(pid, SIGKILL)
            let pid = self.pid
            Thread.detachNewThread {
                var status: Int32 = 0
                _ = rb_waitpid(pid, &status)
            }
        }
        if pidfd >= 0 { close(pidfd) }
        fds.forEach { close($0) }
        fds = []
    }

    /// Waits until `ready` has data (slirp4netns's "1", pasta's pid), the helper exits, or the
    /// time is up; throws in the last two cases, with what the helper printed.
    func waitReady(_ ready: Int32, log: Int32) throws {
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(NetworkHelper.readyTimeoutMilliseconds) * 1_000_000
        while true {
            let now = DispatchTime.now().uptimeNanoseconds
            guard now < deadline else {
                throw RuntimeError(.network, "\(kind.rawValue) did not set up the sandbox's network within \(NetworkHelper.readyTimeoutMilliseconds / 1000) s\(logTail(log))")
            }
            var fds = [pollfd(fd: ready, events: Int16(POLLIN), revents: 0), pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)]
            let n = poll(&fds, 2, Int32((deadline - now) / 1_000_000) + 1)
            if n < 0 {
                if errno == EINTR { continue }
                throw RuntimeError(.network, "waiting for \(kind.rawValue): poll: \(errnoText(errno))")
            }
            if fds[0].revents & Int16(POLLIN) != 0 {
                var byte: UInt8 = 0
                let got = read(ready, &byte, 1)
                if got == 1 { return }
                if got < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            }
            // The helper is gone (its pidfd readable), or hung up without a word (EOF, POLLHUP).
            if fds[1].revents != 0 || fds[0].revents & Int16(POLLHUP) != 0 {
                if fds[1].revents == 0 { kill(pid, SIGKILL) }
                var status: Int32 = 0
                let w = rb_waitpid(pid, &status)
                reaped = w == pid
                let how = rb_wifexited(status) != 0 ? "exited with status \(rb_wexitstatus(status))"
                    : "was killed by signal \(rb_wtermsig(status))"
                throw RuntimeError(.network, "\(kind.rawValue) could not set up the sandbox's network: it \(how)\(logTail(log))")
            }
        }
    }

    /// The last lines the helper printed, as `: line; line`, or "".
    private func logTail(_ log: Int32) -> String {
        var buf = [UInt8](repeating: 0, count: 8192)
        let n = pread(log, &buf, buf.count, 0)
        guard n > 0 else { return "" }
        let lines = String(decoding: buf[..<n], as: UTF8.self).split(separator: "\n")
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("Failed to send") && !$0.hasPrefix("WARNING: Support for seccomp is experimental") }
        return lines.isEmpty ? "" : ": " + lines.suffix(5).joined(separator: "; ")
    }
}
