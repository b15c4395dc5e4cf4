#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A pseudo-terminal for the command (docker's `-t`), made in the sandbox's own devpts instance
/// as runc's terminal mode makes it: the command's stdin, stdout and stderr and its controlling
/// terminal; the host's terminal is never handed in. rbuild relays between the master side and
/// `input`/`output`.
public struct TerminalAttachment: Sendable {
    /// Where the typing comes from (docker's `-i`): made raw for the run when it is a terminal,
    /// and restored after. nil: nothing is typed into the command's terminal.
    public var input: Int32?
    /// Where the terminal's output goes; its window size (or `input`'s) is the terminal's,
    /// followed while the command runs.
    public var output: Int32

    public init(input: Int32?, output: Int32) {
        self.input = input
        self.output = output
    }
}

/// Copies between a terminal's master side and the caller's descriptors on a thread of its own,
/// until every process in the sandbox has closed the terminal (the master reads EIO). A
/// terminal of rbuild's own on `input` is put in raw mode (the sandbox's terminal does the line
/// editing and turns Ctrl-C into SIGINT) and restored when the relay ends.
final class ConsoleRelay: @unchecked Sendable {
    private let master: Int32
    private let attachment: TerminalAttachment
    private let done = DispatchSemaphore(value: 0)
    private var saved: termios?

    init(master: Int32, attachment: TerminalAttachment) {
        self.master = master
        self.attachment = attachment
        if let input = attachment.input, isatty(input) == 1 {
            var t = termios()
            if tcgetattr(input, &t) == 0 {
                saved = t
                var raw = t
                cfmakeraw(&raw)
                _ = tcsetattr(input, TCSANOW, &raw)
            }
        }
        _ = followWindowSize(nil)
        Thread.detachNewThread { [self] in
            relay()
            done.signal()
        }
    }

    /// Waits until the relay has copied everything the command wrote, then puts the caller's
    /// terminal back. The sandbox has ended by then, so the master reads EIO soon.
    func finish() {
        done.wait()
        if let saved, let input = attachment.input {
            var t = saved
            _ = tcsetattr(input, TCSANOW, &t)
        }
        close(master)
    }

    /// Copies the caller's window size (of `output`, else `input`) to the terminal when it
    /// differs from `last`; returns the size now.
    private func followWindowSize(_ last: winsize?) -> winsize? {
        var ws = winsize()
        guard ioctl(attachment.output, UInt(TIOCGWINSZ), &ws) == 0
            || attachment.input.map({ ioctl($0, UInt(TIOCGWINSZ), &ws) == 0 }) == true else { return last }
        if last.map({ $0.ws_row != ws.ws_row || $0.ws_col != ws.ws_col }) ?? true {
            _ = ioctl(master, UInt(TIOCSWINSZ), &ws)
        }
        return ws
    }

    private func relay() {
        var buf = [UInt8](repeating: 0, count: 65536)
        var input = attachment.input ?? -1
        var size = followWindowSize(nil)
        while true {
            var fds = [pollfd(fd: master, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: input, events: Int16(POLLIN), revents: 0)]
            // A resize is noticed within 200 ms: polling for it keeps SIGWINCH (which rbuild
            // forwards into the sandbox) out of this.
            let n = poll(&fds, input >= 0 ? 2 : 1, 200)
            if n < 0 && errno != EINTR { return }
            size = followWindowSize(size)
            if n <= 0 { continue }
            if fds[0].revents != 0 {
                let got = read(master, &buf, buf.count)
                if got < 0 && (errno == EINTR || errno == EAGAIN) { continue }
                // EIO: no process holds the terminal any more.
                if got <= 0 || !writeAll(attachment.output, buf, got) { return }
            }
            if input >= 0 && fds[1].revents != 0 {
                let got = read(input, &buf, buf.count)
                if got < 0 && (errno == EINTR || errno == EAGAIN) { continue }
                if got <= 0 {
                    // The caller's input ended: the terminal's end-of-file character says so
                    // to the command (docker sends its stdin's EOF the same way).
                    var eof: UInt8 = 4
                    _ = write(master, &eof, 1)
                    input = -1
                    continue
                }
                _ = writeAll(master, buf, got)
            }
        }
    }

    private func writeAll(_ fd: Int32, _ buf: [UInt8], _ count: Int) -> Bool {
        var off = 0
        while off < count {
            let w = buf.withUnsafeBytes { write(fd, $0.baseAddress! + off, count - off) }
            if w < 0 && errno == EINTR { continue }
            if w <= 0 { return false }
            off += w
        }
        return true
    }
}
