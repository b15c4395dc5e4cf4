/// The fields of a buildx-style option value (`type=local,dest=DIR`): split on commas, with double
/// quotes keeping commas inside a value (`"name=a,b"`); empty fields dropped.
package func splitOptionFields(_ text: String) -> [String] {
    var out: [String] = [], cur = "", quoted = false
    for ch in text {
        if ch == "\"" { quoted.toggle(); continue }
        if ch == "," && !quoted { out.append(cur); cur = ""; continue }
        cur.append(ch)
    }
    out.append(cur)
    return out.filter { !$0.isEmpty }
}
