// cnitool: drive a CNI network configuration list through libcni, the way a
// container runtime (containerd's CRI, CRI-O, the kubelet's dockershim) does.
//
// Usage:
//
//	cnitool add|check|del|gc|status <net> [<netns>]
//
// <net> is the "name" of a .conflist in NETCONFPATH; <netns> the path of the
// pod's network namespace (not needed for gc and status).
//
// Environment:
//
//	NETCONFPATH       conflist directory (default /etc/cni/net.d)
//	CNI_PATH          plugin directories, ':'-separated
//	CNI_IFNAME        interface name in the pod (default eth0)
//	CNI_ARGS          "K=V;K=V" plugin arguments (K8S_POD_NAMESPACE=...)
//	CAP_ARGS          JSON object of capability arguments ({"portMappings": [...]})
//	CNI_CONTAINERID   container id (default: derived from the netns path, as upstream)
//	CNI_CACHE_DIR     libcni's result cache (default /var/lib/cni)
//	CNI_VALID_ATTACHMENTS  gc: JSON list of {"containerID": ..., "ifname": ...} to keep
//	CNITOOL_TRACE     file to append one JSON line per plugin execution to
//	                  (plugin, command, containerID, stdin, raw stdout, error): the
//	                  raw result of each plugin before libcni parses it
//
// add prints the result of the list (libcni's parsed result, in the list's
// cniVersion). A failing plugin's CNI error is printed as JSON on stdout
// ({"code":..,"msg":..,"details":..}) and the exit status is 1; other errors
// go to stderr with exit status 2.
//
// gc and status (CNI spec 1.1.0) use libcni's GCNetworkList and
// GetStatusNetworkList when libcni has them. The libcni this is built with
// (Debian bookworm's golang-github-appc-cni-dev 1.1.2) predates them, so here
// they follow the semantics of libcni 1.2: the list must be cniVersion 1.1.0
// or later; every plugin is executed with CNI_COMMAND=GC (with the list's name
// and version and "cni.dev/valid-attachments" injected) or CNI_COMMAND=STATUS,
// and only CNI_PATH set among the CNI_* variables.
package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

const (
	defaultNetconfPath = "/etc/cni/net.d"
	defaultIfname      = "eth0"
	defaultCacheDir    = "/var/lib/cni"
)

// tracingExec is libcni's default exec with every plugin execution recorded.
type tracingExec struct {
	invoke.DefaultExec
	mu   sync.Mutex
	path string
}

type traceLine struct {
	Plugin      string          `json:"plugin"`
	Command     string          `json:"command"`
	ContainerID string          `json:"containerID"`
	Stdin       json.RawMessage `json:"stdin"`
	Stdout      string          `json:"stdout"`
	Error       string          `json:"error,omitempty"`
}

func envValue(environ []string, key string) string {
	value := ""
	for _, kv := range environ {
		if strings.HasPrefix(kv, key+"=") {
			value = kv[len(key)+1:] // the last one wins, as in the kernel's execve
		}
	}
	return value
}

func (e *tracingExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	out, err := e.DefaultExec.ExecPlugin(ctx, pluginPath, stdinData, environ)
	if e.path == "" {
		return out, err
	}
	line := traceLine{
		Plugin:      filepath.Base(pluginPath),
		Command:     envValue(environ, "CNI_COMMAND"),
		ContainerID: envValue(environ, "CNI_CONTAINERID"),
		Stdin:       json.RawMessage(stdinData),
		Stdout:      string(out),
	}
	if !json.Valid(stdinData) {
		quoted, _ := json.Marshal(string(stdinData))
		line.Stdin = quoted
	}
	if err != nil {
		line.Error = err.Error()
	}
	data, merr := json.Marshal(line)
	if merr == nil {
		e.mu.Lock()
		defer e.mu.Unlock()
		if f, ferr := os.OpenFile(e.path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); ferr == nil {
			_, _ = f.Write(append(data, '\n'))
			_ = f.Close()
		}
	}
	return out, err
}

func newExec() *tracingExec {
	return &tracingExec{
		DefaultExec: invoke.DefaultExec{
			RawExec:       &invoke.RawExec{Stderr: os.Stderr},
			PluginDecoder: version.PluginDecoder{},
		},
		path: os.Getenv("CNITOOL_TRACE"),
	}
}

func parseArgs(text string) ([][2]string, error) {
	var out [][2]string
	for _, pair := range strings.Split(text, ";") {
		if pair == "" {
			continue
		}
		kv := strings.SplitN(pair, "=", 2)
		if len(kv) != 2 || kv[0] == "" {
			return nil, fmt.Errorf("CNI_ARGS: invalid pair %q (want KEY=VALUE)", pair)
		}
		out = append(out, [2]string{kv[0], kv[1]})
	}
	return out, nil
}

func containerID(netns string) string {
	if id := os.Getenv("CNI_CONTAINERID"); id != "" {
		return id
	}
	sum := sha512.Sum512([]byte(netns))
	return fmt.Sprintf("cnitool-%x", sum[:10])
}

func runtimeConf(netns string) (*libcni.RuntimeConf, error) {
	args, err := parseArgs(os.Getenv("CNI_ARGS"))
	if err != nil {
		return nil, err
	}
	caps := map[string]interface{}{}
	if raw := os.Getenv("CAP_ARGS"); raw != "" {
		if err := json.Unmarshal([]byte(raw), &caps); err != nil {
			return nil, fmt.Errorf("CAP_ARGS is not a JSON object: %w", err)
		}
	}
	ifname := os.Getenv("CNI_IFNAME")
	if ifname == "" {
		ifname = defaultIfname
	}
	if netns != "" {
		if abs, err := filepath.Abs(netns); err == nil {
			netns = abs
		}
	}
	return &libcni.RuntimeConf{
		ContainerID:    containerID(netns),
		NetNS:          netns,
		IfName:         ifname,
		Args:           args,
		CapabilityArgs: caps,
	}, nil
}

// gcAttachment is libcni 1.2's types.GCAttachment.
type gcAttachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

func requireVersion(list *libcni.NetworkConfigList, verb string) error {
	ok, err := version.GreaterThanOrEqualTo(list.CNIVersion, "1.1.0")
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("configuration version %q does not support the %s command", list.CNIVersion, verb)
	}
	return nil
}

// execEach runs every plugin of the list with one verb and no attachment.
func execEach(ctx context.Context, exec *tracingExec, paths []string, list *libcni.NetworkConfigList, verb string, inject map[string]interface{}) error {
	var errs []string
	var first error
	for _, plugin := range list.Plugins {
		pluginPath, err := exec.FindInPath(plugin.Network.Type, paths)
		if err == nil {
			values := map[string]interface{}{"name": list.Name, "cniVersion": list.CNIVersion}
			for k, v := range inject {
				values[k] = v
			}
			var conf *libcni.NetworkConfig
			conf, err = libcni.InjectConf(plugin, values)
			if err == nil {
				args := &invoke.Args{Command: verb, Path: strings.Join(paths, ":")}
				err = invoke.ExecPluginWithoutResult(ctx, pluginPath, conf.Bytes, args, exec)
			}
		}
		if err != nil {
			if first == nil {
				first = err
			}
			errs = append(errs, fmt.Sprintf("plugin type=%q failed (%s): %v", plugin.Network.Type, strings.ToLower(verb), err))
		}
	}
	if len(errs) == 1 {
		return fmt.Errorf("%s: %w", errs[0], first)
	}
	if len(errs) > 1 {
		return fmt.Errorf("%s: %w", strings.Join(errs, "; "), first)
	}
	return nil
}

func gcNetworkList(ctx context.Context, exec *tracingExec, paths []string, list *libcni.NetworkConfigList) error {
	if err := requireVersion(list, "GC"); err != nil {
		return err
	}
	valid := []gcAttachment{}
	if raw := os.Getenv("CNI_VALID_ATTACHMENTS"); raw != "" {
		if err := json.Unmarshal([]byte(raw), &valid); err != nil {
			return fmt.Errorf("CNI_VALID_ATTACHMENTS is not a JSON list of attachments: %w", err)
		}
	}
	return execEach(ctx, exec, paths, list, "GC", map[string]interface{}{"cni.dev/valid-attachments": valid})
}

func statusNetworkList(ctx context.Context, exec *tracingExec, paths []string, list *libcni.NetworkConfigList) error {
	if err := requireVersion(list, "STATUS"); err != nil {
		return err
	}
	return execEach(ctx, exec, paths, list, "STATUS", nil)
}

// fail prints a plugin's CNI error as JSON on stdout (exit 1), anything else on stderr (exit 2).
func fail(err error) {
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		data, _ := json.Marshal(map[string]interface{}{
			"code":    cniErr.Code,
			"msg":     cniErr.Msg,
			"details": cniErr.Details,
		})
		fmt.Println(string(data))
		fmt.Fprintf(os.Stderr, "cnitool: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "cnitool: %v\n", err)
	os.Exit(2)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: cnitool add|check|del|gc|status <net> [<netns>]")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 3 {
		usage()
	}
	verb, name := os.Args[1], os.Args[2]
	netns := ""
	if len(os.Args) > 3 {
		netns = os.Args[3]
	}
	switch verb {
	case "add", "check", "del":
		if netns == "" && verb != "del" {
			usage()
		}
	case "gc", "status":
	default:
		usage()
	}

	confDir := os.Getenv("NETCONFPATH")
	if confDir == "" {
		confDir = defaultNetconfPath
	}
	list, err := libcni.LoadConfList(confDir, name)
	if err != nil {
		fail(fmt.Errorf("loading network %q from %s: %w", name, confDir, err))
	}
	paths := filepath.SplitList(os.Getenv("CNI_PATH"))
	cacheDir := os.Getenv("CNI_CACHE_DIR")
	if cacheDir == "" {
		cacheDir = defaultCacheDir
	}
	exec := newExec()
	cni := libcni.NewCNIConfigWithCacheDir(paths, cacheDir, exec)
	ctx := context.Background()

	switch verb {
	case "gc":
		if err := gcNetworkList(ctx, exec, paths, list); err != nil {
			fail(err)
		}
		return
	case "status":
		if err := statusNetworkList(ctx, exec, paths, list); err != nil {
			fail(err)
		}
		return
	}

	rt, err := runtimeConf(netns)
	if err != nil {
		fail(err)
	}
	switch verb {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		if err := result.Print(); err != nil {
			fail(err)
		}
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
	}
}
