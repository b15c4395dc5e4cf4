#if canImport(Glibc)
import Glibc
#endif
import CRBuildChild
import Foundation
import RBuildSystem

/// How much of a sandbox this system lets rbuild make. A CI container (GitLab's docker executor,
/// a Kubernetes pod) often refuses new user namespaces (Docker's and Kubernetes' default seccomp
/// profiles) or masks parts of its /proc, which makes the kernel refuse a new procfs to a user
/// namespace; rbuild then uses the strongest of these that works.
public enum Isolation: String, Sendable, Codable, CaseIterable {
    /// User, mount, pid, ipc, uts, cgroup (and network) namespaces, seccomp, dropped capabilities.
    case sandbox
    /// The same without a pid namespace: the outer /proc is bound read-only (BuildKit's
    /// `--oci-worker-no-process-sandbox`), so RUN steps see the container's processes.
    case noPidSandbox = "no-pid-sandbox"
    /// No namespaces at all (rbuild runs as root where none can be made): chroot into a copy
    /// snapshot, the standard /dev nodes made with mknod, Docker's default capabilities less
    /// CAP_SYS_CHROOT, no_new_privs and the seccomp filter, as buildah's chroot isolation.
    case chroot

    /// `RBUILD_ISOLATION`: the isolation to use when none is passed (`auto` or unset: detect).
    public static let variable = "RBUILD_ISOLATION"

    /// `RBUILD_ISOLATION`, read once (every sandbox asks).
    static let environmentRequest: Result<Isolation?, RuntimeError> = {
        do { return .success(try parse(ProcessInfo.processInfo.environment[variable] ?? "")) } catch let e as RuntimeError {
            return .failure(e)
        } catch { return .failure(RuntimeError(.badOption, "\(error)")) }
    }()

    /// `auto` (nil), `sandbox`, `no-pid-sandbox` or `chroot`.
    public static func parse(_ text: String) throws -> Isolation? {
        if text == "auto" || text.isEmpty { return nil }
        guard let i = Isolation(rawValue: text) else {
            throw RuntimeError(.badOption, "--isolation \(text): expected auto, sandbox, no-pid-sandbox or chroot")
        }
        return i
    }

    /// The choice for `requested` (nil: `RBUILD_ISOLATION`, else the strongest that works here),
    /// checked against what this system allows. Probes at most twice per process.
    public static func choose(_ requested: Isolation? = nil) throws -> IsolationChoice {
        let facts = IsolationFacts.current
        guard let requested = try requested ?? environmentRequest.get() else { return try facts.strongest() }
        if let why = facts.problem(requested) {
            throw RuntimeError(.hostUnsupported, "the \(requested.rawValue) isolation cannot be used here: \(why)")
        }
        var choice = IsolationChoice(isolation: requested, reason: "requested", warning: nil)
        choice.warning = facts.warning(requested)
        return choice
    }

    /// Makes this process non-dumpable: with a reduced isolation, RUN steps share its uid (and in
    /// the no-pid sandbox its /proc), and a dumpable process of the same uid is one they could
    /// ptrace or whose /proc/PID/root they could open. Idempotent.
    static func protectBuilder() { rb_set_undumpable() }
}

/// The isolation in use, why it was chosen, and what it gives up (said in the progress output).
public struct IsolationChoice: Sendable, Codable, Equatable {
    public var isolation: Isolation
    public var reason: String
    /// What RUN steps can reach that a full sandbox keeps from them; nil for `sandbox`.
    public var warning: String?
}

/// What this process can do, probed once.
struct IsolationFacts: Sendable {
    /// nil: user namespaces can be made.
    var userNamespaces: String?
    /// nil: a fresh procfs can be mounted in a new user and pid namespace (only probed when the
    /// mount table shows something mounted over parts of /proc, as container runtimes mask them).
    var freshProc: String?
    /// nil: rbuild may chroot (it runs as root with CAP_SYS_CHROOT).
    var chroot: String?

    static let current: IsolationFacts = {
        let userns = UserNamespaceSupport.problem
        var proc: String?
        if userns == nil, let masked = maskedProcPaths(), !masked.isEmpty {
            if let why = HostReport.probeProcInUserNamespace() {
                let shown = masked.prefix(4).joined(separator: ", ") + (masked.count > 4 ? ", …" : "")
                proc = "a new /proc cannot be mounted (\(why)): the container masks parts of its own (\(shown))"
            }
        }
        return IsolationFacts(userNamespaces: userns, freshProc: proc, chroot: chrootProblem())
    }()

    func problem(_ isolation: Isolation) -> String? {
        switch isolation {
        case .sandbox:
            return userNamespaces.map { "no user namespace can be made (\($0))" } ?? freshProc
        case .noPidSandbox:
            return userNamespaces.map { "no user namespace can be made (\($0))" }
        case .chroot:
            return chroot
        }
    }

    func strongest() throws -> IsolationChoice {
        if problem(.sandbox) == nil {
            return IsolationChoice(isolation: .sandbox, reason: "user, mount, pid, ipc, uts and network namespaces can be made", warning: nil)
        }
        if userNamespaces == nil {
            return IsolationChoice(isolation: .noPidSandbox, reason: freshProc ?? "", warning: warning(.noPidSandbox))
        }
        if chroot == nil {
            return IsolationChoice(isolation: .chroot, reason: "no user namespace can be made (\(userNamespaces!)) and rbuild runs as root",
                                   warning: warning(.chroot))
        }
        throw RuntimeError(.hostUnsupported, """
            rbuild cannot isolate RUN steps here: no user namespace can be made (\(userNamespaces!)), and rbuild does not run as root. \
            Ask for one of two settings: allow user namespaces (Docker: --security-opt seccomp=unconfined, and --security-opt \
            systempaths=unconfined for a pid namespace too; Kubernetes: securityContext.seccompProfile.type: Unconfined, and \
            procMount: Unmasked), which gives the rootless sandbox; or run the job as root in its container (docker run --user 0; \
            Kubernetes runAsUser: 0), which gives the chroot isolation. See the README's "Builds in CI containers"
            """)
    }

    func warning(_ isolation: Isolation) -> String? {
        switch isolation {
        case .sandbox: return nil
        case .noPidSandbox:
            return "no pid namespace: RUN steps see the container's processes through its /proc (bound read-only) and can signal those of the same user"
        case .chroot:
            return "chroot isolation: RUN steps share the container's network, hostname and processes (without a /proc), as root with Docker's default capabilities"
        }
    }

    /// Mount points under /proc other than binfmt_misc's (which every host has): what container
    /// runtimes mount over the paths they mask or make read-only. nil when unreadable.
    static func maskedProcPaths() -> [String]? {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        return text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard f.count > 4 else { return nil }
            let point = String(f[4])
            return point.hasPrefix("/proc/") && point != "/proc/sys/fs/binfmt_misc" ? point : nil
        }
    }

    static func chrootProblem() -> String? {
        guard geteuid() == 0 else { return "it needs rbuild to run as root (uid \(geteuid()) here)" }
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        if let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
           let mask = UInt64(line.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16),
           mask & (1 << 18) == 0 {
            return "rbuild runs as root without CAP_SYS_CHROOT (the container dropped it)"
        }
        return nil
    }
}
