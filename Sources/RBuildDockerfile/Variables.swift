import RBuildSystem
/// ARG and ENV scoping, as BuildKit does it:
/// - ARGs before the first FROM are global: they (and the platform ARGs) expand FROM lines only;
/// - a stage sees a global ARG only after redeclaring it (`ARG NAME`), and the platform ARGs only
///   after `ARG TARGETPLATFORM` and the like;
/// - `--build-arg` overrides any declared ARG's default; ENV wins over an ARG of the same name;
/// - the proxy ARGs need no declaration: they reach RUN steps' environment when given.

/// What the build supplies: `--build-arg`s and the platforms.
public struct ExpansionContext: Sendable {
    public var buildArgs: [String: String]
    public var buildPlatform: Platform
    public var targetPlatform: Platform

    public init(buildArgs: [String: String] = [:], buildPlatform: Platform, targetPlatform: Platform? = nil) {
        self.buildArgs = buildArgs
        self.buildPlatform = buildPlatform
        self.targetPlatform = targetPlatform ?? buildPlatform
    }

    /// BUILDPLATFORM, BUILDOS, BUILDARCH, BUILDVARIANT, TARGETPLATFORM, TARGETOS, TARGETARCH,
    /// TARGETVARIANT, with buildx's values.
    public var platformArgs: [String: String] {
        [
            "BUILDPLATFORM": buildPlatform.description, "BUILDOS": buildPlatform.os,
            "BUILDARCH": buildPlatform.architecture, "BUILDVARIANT": buildPlatform.variant ?? "",
            "TARGETPLATFORM": targetPlatform.description, "TARGETOS": targetPlatform.os,
            "TARGETARCH": targetPlatform.architecture, "TARGETVARIANT": targetPlatform.variant ?? "",
        ]
    }

    /// Usable in RUN without an ARG line (their values never enter the image's history).
    public static let proxyArgs: Set<String> = [
        "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
        "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
    ]
}

/// The global scope: the ARGs before the first FROM, with the platform ARGs.
public struct GlobalScope: Sendable {
    public private(set) var values: [String: String]
    /// Declared global ARG names (with or without a value).
    public private(set) var declared: Set<String>

    public init(_ definition: BuildDefinition, context: ExpansionContext, lexer: ShellLexer = ShellLexer()) throws {
        values = context.platformArgs
        declared = []
        for located in definition.globalArgs {
            guard case .arg(let decls) = located.instruction else { continue }
            for d in decls {
                declared.insert(d.name)
                if let v = context.buildArgs[d.name] {
                    values[d.name] = v
                } else if let def = d.defaultValue {
                    let current = values
                    values[d.name] = try lexer.expand(def, env: { current[$0] }).word
                } else {
                    values.removeValue(forKey: d.name)
                }
            }
        }
    }

    public func lookup(_ name: String) -> String? { values[name] }
}

/// The variables of one stage as it is evaluated, instruction by instruction.
public struct StageScope: Sendable {
    /// ENV in order (what the image config records), starting from the base image's.
    public private(set) var env: [(key: String, value: String)]
    /// ARGs declared in this stage so far, with their values (nil: declared, no value).
    public private(set) var args: [String: String?]
    let context: ExpansionContext
    let global: GlobalScope

    public init(baseEnv: [(key: String, value: String)] = [], global: GlobalScope, context: ExpansionContext) {
        self.env = baseEnv
        self.args = [:]
        self.context = context
        self.global = global
    }

    /// ENV first, then this stage's ARGs.
    public func lookup(_ name: String) -> String? {
        if let e = env.last(where: { $0.key == name }) { return e.value }
        if let a = args[name] { return a }
        return nil
    }

    /// `ARG name[=default]` in a stage.
    public mutating func declare(_ d: ArgDeclaration, lexer: ShellLexer = ShellLexer()) throws {
        if let v = context.buildArgs[d.name] {
            args[d.name] = v
        } else if let def = d.defaultValue {
            let snapshot = self
            args[d.name] = try lexer.expand(def, env: { snapshot.lookup($0) }).word
        } else if let g = global.lookup(d.name) {
            args[d.name] = g
        } else {
            args[d.name] = .some(nil)
        }
    }

    /// `ENV key=value` (the value expanded with the scope as it was before this instruction).
    public mutating func setEnv(_ key: String, _ value: String) {
        if let i = env.firstIndex(where: { $0.key == key }) {
            env[i].value = value
        } else {
            env.append((key, value))
        }
    }

    /// The environment a RUN step sees: ENV, then the ARGs (as docker build does), then proxy ARGs
    /// given with --build-arg.
    public var runEnvironment: [String] {
        var out = env.map { "\($0.key)=\($0.value)" }
        let envKeys = Set(env.map(\.key))
        for (k, v) in args.sorted(by: { $0.key < $1.key }) where !envKeys.contains(k) {
            if let v { out.append("\(k)=\(v)") }
        }
        for k in ExpansionContext.proxyArgs.sorted() where args[k] == nil && !envKeys.contains(k) {
            if let v = context.buildArgs[k] { out.append("\(k)=\(v)") }
        }
        return out
    }
}

/// Which instructions' arguments go through word expansion (RUN, CMD, ENTRYPOINT and SHELL do not:
/// their shell or program sees the text as written).
public func expandsArguments(_ command: String) -> Bool {
    ["from", "add", "copy", "env", "expose", "label", "stopsignal", "user", "volume", "workdir", "arg", "onbuild"]
        .contains(command) && command != "onbuild"
}
