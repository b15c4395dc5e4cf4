// The files every sandbox gets at /etc/hosts, /etc/hostname and /etc/resolv.conf (bound from
// its scratch directory by `ScratchDir.writeEtcFiles`), as text: made here without touching the
// host, so that tests can check them line by line.
enum EtcFiles {
    /// /etc/hosts: loopback names, the sandbox's hostname, then the `--add-host` entries in the
    /// order given (the resolver takes the first line that names a host).
    static func hosts(hostname: String, extraHosts: [ExtraHost]) -> String {
        var text = """
        127.0.0.1\tlocalhost
        ::1\tlocalhost ip6-localhost ip6-loopback
        127.0.1.1\t\(hostname)

        """
        for h in extraHosts { text += "\(h.address)\t\(h.name)\n" }
        return text
    }

    /// /etc/resolv.conf for a sandbox on `network`. `host` is the host's resolver configuration:
    /// systemd-resolved's upstream file when there is one (its /etc/resolv.conf names only the
    /// stub on the host's 127.0.0.53), else /etc/resolv.conf.
    ///
    /// - host network: the host's file as it is (a loopback resolver is reachable there).
    /// - own network: the helper's DNS forwarder first — it relays to the host's resolvers, even a
    ///   loopback one, which the sandbox itself cannot reach — and the host's `search`, `domain`
    ///   and `options` lines. pasta's forwarder is followed by the host's own nameservers that are
    ///   not loopback addresses (pasta routes to them as to any address).
    /// - none: no nameserver.
    static func resolvConf(network: NetworkMode, helper: NetworkHelper.Kind?, host: String) -> String {
        switch network {
        case .host:
            return host
        case .none:
            return "# rbuild: no network in this sandbox\n"
        case .isolated:
            guard let helper else { return "# rbuild: no network helper\n" }
            var servers = [helper.nameserver]
            var other: [String] = []
            for line in host.split(separator: "\n") {
                let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                guard let key = fields.first else { continue }
                switch key {
                case "nameserver" where fields.count > 1:
                    let address = String(fields[1])
                    if helper == .pasta && !isLoopback(address) && !servers.contains(address) { servers.append(address) }
                case "search", "domain", "options":
                    other.append(String(line))
                default:
                    continue
                }
            }
            // The resolver reads at most three (resolv.conf(5): MAXNS).
            return "# rbuild: DNS through \(helper.rawValue), which forwards to the host's resolvers\n"
                + servers.prefix(3).map { "nameserver \($0)\n" }.joined() + other.map { $0 + "\n" }.joined()
        }
    }

    /// 127.0.0.0/8, ::1 and the unspecified addresses: what names the host's own loopback.
    static func isLoopback(_ address: String) -> Bool {
        address.hasPrefix("127.") || address == "::1" || address == "0.0.0.0" || address == "::"
            || address.lowercased().hasPrefix("::ffff:127.")
    }
}
