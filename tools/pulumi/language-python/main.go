// pulumi-language-python: a small Python language host for the offline test toolchain.
//
// Why this exists: the upstream language host lives in its own Go module
// (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3) that has no tags; the Go module
// proxy reachable from this project's machines serves it at no version we could name (every query -- @latest,
// @v3.274.1, a commit hash -- is refused with 403 "This module version is not available"). So this program
// implements the part of the LanguageRuntime gRPC protocol that `pulumi preview/up/destroy` needs, on top of
// the pulumi sdk/v3 Go module (same version as the CLI), and runs programs through the upstream
// `pulumi-language-python-exec` script, which tools/build-toolchain.sh copies beside this binary from the
// sdk/v3 module.
//
// What it supports: Pulumi.yaml `runtime: {name: python, options: {virtualenv: <dir>, toolchain: pip}}`
// (or no virtualenv: `$PULUMI_PYTHON_CMD`, else `python3`), config and secret config keys, dry runs,
// parallelism, `GetRequiredPackages`/`GetRequiredPlugins` (from the pulumi-plugin.json files of the
// installed Python packages) and `InstallDependencies` (pip). Not supported: uv/poetry toolchains,
// type checkers, code generation, `pulumi new` templating, `pulumi convert`, `RunPlugin` (Python-based
// provider plugins). Dynamic providers do not go through the language host at all: the engine starts
// `pulumi-resource-pulumi-python` (copied from the sdk module) with PULUMI_RUNTIME_VIRTUALENV set.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "0.0.0-dev"

// userActionableExitCode is what pulumi-language-python-exec exits with after it has already
// reported the error to the user (the engine must then bail without printing more).
const userActionableExitCode = 32

const execScriptName = "pulumi-language-python-exec"

func main() {
	fs := flag.NewFlagSet("pulumi-language-python", flag.ContinueOnError)
	tracing := fs.String("tracing", "", "Emit tracing to a Zipkin-compatible tracing endpoint")
	logToStderr := fs.Bool("logtostderr", false, "Log to stderr")
	verbose := fs.Int("v", 0, "Log verbosity")
	showVersion := fs.Bool("version", false, "Print the version and exit")
	_ = fs.String("root", "", "Project root (ignored; taken from the Run request)")
	_ = fs.String("virtualenv", "", "Virtualenv (ignored; taken from the Run request)")
	_ = fs.String("toolchain", "", "Toolchain (ignored; taken from the Run request)")
	_ = fs.String("typechecker", "", "Type checker (ignored)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *showVersion {
		fmt.Println(version)
		return
	}
	logging.InitLogging(*logToStderr, *verbose, false)

	engineAddress := ""
	if args := fs.Args(); len(args) > 0 {
		engineAddress = args[len(args)-1]
	}

	execScript, err := findExecScript()
	if err != nil {
		fmt.Fprintf(os.Stderr, "fatal: %v\n", err)
		os.Exit(1)
	}

	host := &languageHost{engineAddress: engineAddress, tracing: *tracing, execScript: execScript}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, host)
			return nil
		},
		Options: rpcutil.OpenTracingServerInterceptorOptions(nil),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "fatal: could not start language host RPC server: %v\n", err)
		os.Exit(1)
	}
	// The engine reads the port from the first line of stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "fatal: language host RPC server stopped: %v\n", err)
		os.Exit(1)
	}
}

// findExecScript looks for pulumi-language-python-exec beside this binary, then on PATH.
func findExecScript() (string, error) {
	if self, err := os.Executable(); err == nil {
		if resolved, err := filepath.EvalSymlinks(self); err == nil {
			self = resolved
		}
		candidate := filepath.Join(filepath.Dir(self), execScriptName)
		if _, err := os.Stat(candidate); err == nil {
			return candidate, nil
		}
	}
	if p, err := exec.LookPath(execScriptName); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found beside the language host binary or on PATH", execScriptName)
}

type languageHost struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	mu            sync.Mutex
	engineAddress string
	tracing       string
	execScript    string
}

func (h *languageHost) Handshake(
	_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if req.GetEngineAddress() != "" {
		h.engineAddress = req.GetEngineAddress()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *languageHost) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

// programOptions are the runtime options of Pulumi.yaml (`runtime.options`).
type programOptions struct {
	root       string
	programDir string
	virtualenv string
	toolchain  string
}

func optionsFromInfo(info *pulumirpc.ProgramInfo, fallbackDir string) programOptions {
	o := programOptions{root: info.GetRootDirectory(), programDir: info.GetProgramDirectory()}
	if o.root == "" {
		o.root = fallbackDir
	}
	if o.programDir == "" {
		o.programDir = o.root
	}
	if opts := info.GetOptions(); opts != nil {
		m := opts.AsMap()
		if v, ok := m["virtualenv"].(string); ok {
			o.virtualenv = v
		}
		if v, ok := m["toolchain"].(string); ok {
			o.toolchain = v
		}
	}
	return o
}

// resolveToolchain returns the pip toolchain of the project (the only one this host supports).
func (o programOptions) resolveToolchain() (toolchain.Toolchain, error) {
	switch o.toolchain {
	case "", "pip":
	default:
		return nil, fmt.Errorf("python toolchain %q is not supported by this language host (only pip)", o.toolchain)
	}
	return toolchain.ResolveToolchain(toolchain.PythonOptions{
		Root:       o.root,
		ProgramDir: o.programDir,
		Virtualenv: o.virtualenv,
		Toolchain:  toolchain.Pip,
	})
}

func (h *languageHost) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	opts := optionsFromInfo(req.GetInfo(), req.GetPwd())
	tc, err := opts.resolveToolchain()
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	if opts.virtualenv != "" {
		if err := tc.ValidateVenv(ctx); err != nil {
			return &pulumirpc.RunResponse{Error: err.Error()}, nil
		}
	}

	h.mu.Lock()
	engineAddress := h.engineAddress
	h.mu.Unlock()

	program := req.GetProgram()
	if program == "" {
		program = "."
	}
	args := []string{
		"-u", h.execScript,
		"--monitor", req.GetMonitorAddress(),
		"--engine", engineAddress,
		"--project", req.GetProject(),
		"--stack", req.GetStack(),
		"--pwd", req.GetPwd(),
		"--dry_run", strconv.FormatBool(req.GetDryRun()),
		"--parallel", strconv.Itoa(int(req.GetParallel())),
		"--organization", req.GetOrganization(),
		"--root_directory", opts.root,
	}
	if h.tracing != "" {
		args = append(args, "--tracing", h.tracing)
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	configJSON, err := json.Marshal(req.GetConfig())
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secretKeysJSON, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	cmd.Env = append(env,
		"PULUMI_CONFIG="+string(configJSON),
		"PULUMI_CONFIG_SECRET_KEYS="+string(secretKeysJSON),
	)
	cmd.Dir = req.GetPwd()
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr

	logging.V(5).Infof("language-python: running %s %s", cmd.Path, strings.Join(cmd.Args[1:], " "))
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if exitErr.ExitCode() == userActionableExitCode {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("Program exited with non-zero exit code: %d",
				exitErr.ExitCode())}, nil
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("Problem executing program (could not run language "+
			"executor): %v", err)}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// pluginFile is the content of the pulumi-plugin.json file that Pulumi Python provider SDKs ship.
type pluginFile struct {
	Resource bool   `json:"resource"`
	Name     string `json:"name"`
	Version  string `json:"version"`
	Server   string `json:"server"`
}

// listPluginFiles asks the project's Python which installed packages carry a pulumi-plugin.json.
func listPluginFiles(ctx context.Context, tc toolchain.Toolchain) ([]pluginFile, error) {
	const script = `
import glob, json, os, site, sys
paths = []
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    paths.extend(glob.glob(os.path.join(sp, "*", "pulumi-plugin.json")))
out = []
for p in sorted(set(paths)):
    try:
        with open(p) as f:
            out.append(json.load(f))
    except Exception:
        pass
json.dump(out, sys.stdout)
`
	cmd, err := tc.Command(ctx, "-c", script)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing pulumi-plugin.json files: %w", err)
	}
	var plugins []pluginFile
	if err := json.Unmarshal(out, &plugins); err != nil {
		return nil, fmt.Errorf("parsing pulumi-plugin.json list: %w", err)
	}
	return plugins, nil
}

func (h *languageHost) requiredPlugins(ctx context.Context, info *pulumirpc.ProgramInfo) ([]pluginFile, error) {
	opts := optionsFromInfo(info, "")
	if opts.root == "" {
		return nil, nil
	}
	tc, err := opts.resolveToolchain()
	if err != nil {
		return nil, err
	}
	if opts.virtualenv != "" {
		if err := tc.ValidateVenv(ctx); err != nil {
			return nil, err
		}
	}
	all, err := listPluginFiles(ctx, tc)
	if err != nil {
		return nil, err
	}
	var res []pluginFile
	for _, p := range all {
		if p.Resource && p.Name != "" {
			res = append(res, p)
		}
	}
	return res, nil
}

func (h *languageHost) GetRequiredPackages(
	ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	plugins, err := h.requiredPlugins(ctx, req.GetInfo())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	resp := &pulumirpc.GetRequiredPackagesResponse{}
	for _, p := range plugins {
		resp.Packages = append(resp.Packages, &pulumirpc.PackageDependency{
			Kind: "resource", Name: p.Name, Version: p.Version, Server: p.Server,
		})
	}
	return resp, nil
}

func (h *languageHost) GetRequiredPlugins(
	ctx context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	plugins, err := h.requiredPlugins(ctx, req.GetInfo())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	resp := &pulumirpc.GetRequiredPluginsResponse{}
	for _, p := range plugins {
		resp.Plugins = append(resp.Plugins, &pulumirpc.PluginDependency{
			Kind: "resource", Name: p.Name, Version: p.Version, Server: p.Server,
		})
	}
	return resp, nil
}

// streamWriter forwards dependency-installation output to the engine.
type streamWriter struct {
	stream grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse]
	stderr bool
}

func (w streamWriter) Write(p []byte) (int, error) {
	data := append([]byte(nil), p...)
	resp := &pulumirpc.InstallDependenciesResponse{Stdout: data}
	if w.stderr {
		resp = &pulumirpc.InstallDependenciesResponse{Stderr: data}
	}
	if err := w.stream.Send(resp); err != nil {
		return 0, err
	}
	return len(p), nil
}

var _ io.Writer = streamWriter{}

func (h *languageHost) InstallDependencies(
	req *pulumirpc.InstallDependenciesRequest,
	stream grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse],
) error {
	opts := optionsFromInfo(req.GetInfo(), req.GetDirectory())
	tc, err := opts.resolveToolchain()
	if err != nil {
		return err
	}
	return tc.InstallDependencies(stream.Context(), opts.root, req.GetUseLanguageVersionTools(), true,
		streamWriter{stream: stream}, streamWriter{stream: stream, stderr: true})
}
