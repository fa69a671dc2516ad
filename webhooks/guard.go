package webhooks

import (
	"errors"
	"net"
	"net/netip"
	"net/url"
	"syscall"
	"time"
)

// ErrNotPublic is what a connection to an address that is not public
// fails with (see Public), unless private addresses are allowed.
var ErrNotPublic = errors.New("webhook endpoint is not on a public address")

// Public reports whether a webhook may connect to ip: not loopback,
// private (RFC 1918, IPv6 unique-local), shared (100.64/10), link-local
// (the cloud metadata address 169.254.169.254 among them), multicast,
// unspecified, nor reserved for documentation, benchmarks or the future;
// an IPv4-mapped IPv6 address is judged as its IPv4 one, and the IPv6
// prefixes that embed an IPv4 address (NAT64, 6to4) are refused whole.
func Public(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range [...]netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),
		netip.MustParsePrefix("100.64.0.0/10"),
		netip.MustParsePrefix("192.0.0.0/24"),
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("198.18.0.0/15"),
		netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("203.0.113.0/24"),
		netip.MustParsePrefix("240.0.0.0/4"),
		netip.MustParsePrefix("64:ff9b::/96"),
		netip.MustParsePrefix("64:ff9b:1::/48"),
		netip.MustParsePrefix("100::/64"),
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("2002::/16"),
		netip.MustParsePrefix("fec0::/10"),
	} {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// guardedDialer dials only public addresses (unless allowPrivate): the
// check runs in Control, on the address the connection is about to use,
// after DNS resolution, so a name that resolves to a private address (or
// changes to one between a check and the dial) is refused.
func guardedDialer(allowPrivate bool, timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout}
	if !allowPrivate {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil || !Public(ap.Addr()) {
				return ErrNotPublic
			}
			return nil
		}
	}
	return d
}

// checkURL refuses an endpoint URL that is not absolute https (or http,
// when private addresses are allowed) with a host, or that carries
// credentials. Its errors do not hold the URL.
func checkURL(raw string, allowPrivate bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, errors.New("webhook url is not a URL")
	case u.Scheme != "https" && !(allowPrivate && u.Scheme == "http"):
		if allowPrivate {
			return nil, errors.New("webhook url must be https or http")
		}
		return nil, errors.New("webhook url must be https (http only with webhooks.allow_private)")
	case u.Hostname() == "":
		return nil, errors.New("webhook url has no host")
	case u.User != nil:
		return nil, errors.New("webhook url must not carry credentials")
	}
	return u, nil
}

// CheckURL is checkURL for callers outside the package (settings checks).
func CheckURL(raw string, allowPrivate bool) error {
	_, err := checkURL(raw, allowPrivate)
	return err
}
