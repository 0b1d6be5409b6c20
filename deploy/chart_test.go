package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

const chart = "helm/baldurd"

// helmBin is helm on PATH or where `go install` puts it. When none is
// installed the chart tests are skipped with a one-line reason, unless
// BALDUR_TEST_HELM is set (CI sets it): then they fail.
func helmBin(t *testing.T) string {
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	for _, dir := range []string{os.Getenv("GOBIN"), filepath.Join(os.Getenv("HOME"), "go", "bin")} {
		if p := filepath.Join(dir, "helm"); dir != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if os.Getenv("BALDUR_TEST_HELM") != "" {
		t.Fatal("BALDUR_TEST_HELM is set but helm is not installed: go install helm.sh/helm/v3/cmd/helm@v3.22.0 (.ci/run does)")
	}
	t.Skip("chart tests skipped: no helm (go install helm.sh/helm/v3/cmd/helm@v3.22.0, or set BALDUR_TEST_HELM)")
	return ""
}

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(helmBin(t), args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return errb.String(), err
	}
	return out.String(), nil
}

// rendered is a chart's manifests decoded strictly into their API types.
type rendered struct {
	sts          *appsv1.StatefulSet
	services     map[string]*corev1.Service
	pdb          *policyv1.PodDisruptionBudget
	secrets      map[string]*corev1.Secret
	jobs         []*batchv1.Job
	certificates []*unstructured.Unstructured
	monitors     []*unstructured.Unstructured
}

func render(t *testing.T, set ...string) rendered {
	t.Helper()
	args := []string{"template", "t", chart, "--namespace", "prod"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := helm(t, args...)
	if err != nil {
		t.Fatalf("helm %v: %v\n%s", args, err, out)
	}
	r := rendered{services: map[string]*corev1.Service{}, secrets: map[string]*corev1.Secret{}}
	for _, doc := range strings.Split(out, "\n---") {
		if strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(doc), "---")) == "" {
			continue
		}
		var head struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("a manifest is not YAML: %v\n%s", err, doc)
		}
		strict := func(v any) {
			if err := yaml.UnmarshalStrict([]byte(doc), v); err != nil {
				t.Fatalf("%s does not decode strictly: %v\n%s", head.Kind, err, doc)
			}
		}
		switch head.Kind {
		case "StatefulSet":
			r.sts = &appsv1.StatefulSet{}
			strict(r.sts)
		case "Service":
			s := &corev1.Service{}
			strict(s)
			r.services[s.Name] = s
		case "PodDisruptionBudget":
			r.pdb = &policyv1.PodDisruptionBudget{}
			strict(r.pdb)
		case "Secret":
			s := &corev1.Secret{}
			strict(s)
			r.secrets[s.Name] = s
		case "Job":
			j := &batchv1.Job{}
			strict(j)
			r.jobs = append(r.jobs, j)
		case "Certificate", "ServiceMonitor":
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
				t.Fatal(err)
			}
			if head.Kind == "Certificate" {
				r.certificates = append(r.certificates, u)
			} else {
				r.monitors = append(r.monitors, u)
			}
		default:
			t.Fatalf("unexpected kind %q", head.Kind)
		}
	}
	if r.sts == nil || r.pdb == nil || len(r.services) != 2 {
		t.Fatalf("missing manifests: %+v", r)
	}
	return r
}

func arg(c corev1.Container, name string) (string, bool) {
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name {
			return "", true
		}
	}
	return "", false
}

func TestChartLints(t *testing.T) {
	if out, err := helm(t, "lint", chart, "--strict"); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
	for _, bad := range [][]string{{"replicaCount=4"}, {"replicaCount=2"}, {"tls.enabled=false"}, {"podAntiAffinity=always"},
		{"postgres.enabled=true"}} {
		args := []string{"template", "t", chart}
		for _, s := range bad {
			args = append(args, "--set", s)
		}
		if out, err := helm(t, args...); err == nil {
			t.Errorf("values %v rendered:\n%.300s", bad, out)
		}
	}
}

// The invariants of the default rendering, and with TLS from a Secret or
// cert-manager, PostgreSQL and a ServiceMonitor.
func TestChartRendersTheInvariants(t *testing.T) {
	r := render(t)
	sts := r.sts
	if *sts.Spec.Replicas != 3 || sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement || sts.Spec.ServiceName != "t-baldurd-headless" {
		t.Fatalf("statefulset: replicas %d, policy %s, service %s", *sts.Spec.Replicas, sts.Spec.PodManagementPolicy, sts.Spec.ServiceName)
	}
	if r.pdb.Spec.MaxUnavailable == nil || r.pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Fatalf("PDB: %+v", r.pdb.Spec)
	}
	if h := r.services["t-baldurd-headless"]; h == nil || h.Spec.ClusterIP != "None" || !h.Spec.PublishNotReadyAddresses {
		t.Fatalf("headless service: %+v", h)
	}
	var ports []int32
	for _, p := range r.services["t-baldurd"].Spec.Ports {
		ports = append(ports, p.Port)
	}
	if !slices.Equal(ports, []int32{7400, 7401}) {
		t.Fatalf("client service ports %v", ports)
	}
	pod := sts.Spec.Template.Spec
	c := pod.Containers[0]
	if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/livez" || c.ReadinessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS {
		t.Fatalf("probes: %+v %+v", c.ReadinessProbe, c.LivenessProbe)
	}
	if pod.Affinity == nil || len(pod.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
		pod.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" {
		t.Fatalf("anti-affinity: %+v", pod.Affinity)
	}
	if *pod.TerminationGracePeriodSeconds < 20 {
		t.Fatalf("grace period %d: too short for the leadership hand-off", *pod.TerminationGracePeriodSeconds)
	}
	if sc := c.SecurityContext; !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || !*pod.SecurityContext.RunAsNonRoot || *pod.SecurityContext.RunAsUser == 0 {
		t.Fatalf("security context: %+v %+v", sc, pod.SecurityContext)
	}
	if vct := sts.Spec.VolumeClaimTemplates; len(vct) != 1 || vct[0].Name != "data" || vct[0].Spec.Resources.Requests.Storage().String() != "10Gi" {
		t.Fatalf("volume claims: %+v", vct)
	}
	if dir, _ := arg(c, "data-dir"); dir != "/data" || !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "data" && m.MountPath == "/data" }) {
		t.Fatal("the data volume is not --data-dir")
	}
	peers, _ := arg(c, "peers")
	want := "t-baldurd-0=t-baldurd-0.t-baldurd-headless.prod.svc.cluster.local:7402,t-baldurd-1=t-baldurd-1.t-baldurd-headless.prod.svc.cluster.local:7402,t-baldurd-2=t-baldurd-2.t-baldurd-headless.prod.svc.cluster.local:7402"
	if peers != want {
		t.Fatalf("--peers %s\nwant    %s", peers, want)
	}
	if _, ok := arg(c, "join"); !ok {
		t.Fatal("no --join: pods added later could not join")
	}
	if _, ok := arg(c, "insecure-plaintext"); ok {
		t.Fatal("plaintext by default")
	}
	tls := r.secrets["t-baldurd-tls"]
	if tls == nil || len(tls.Data["ca.pem"]) == 0 || len(tls.Data["t-baldurd-6-key.pem"]) == 0 || len(tls.Data["client.pem"]) == 0 {
		t.Fatalf("generated TLS secret: %v", tls)
	}
	if r.secrets["t-baldurd-audit"] == nil || len(r.secrets["t-baldurd-audit"].Data["audit.key"]) < 16 {
		t.Fatal("audit key secret")
	}

	// TLS from cert-manager; PostgreSQL; a ServiceMonitor; a hard
	// anti-affinity.
	r = render(t, "tls.certManager.enabled=true", "tls.certManager.issuerRef.name=ca", "postgres.enabled=true",
		"postgres.dsnSecret.name=pg", "serviceMonitor.enabled=true", "podAntiAffinity=hard")
	if len(r.certificates) != 7 || r.certificates[3].Object["spec"].(map[string]any)["commonName"] != "t-baldurd-3" {
		t.Fatalf("certificates: %d", len(r.certificates))
	}
	c = r.sts.Spec.Template.Spec.Containers[0]
	if s, _ := arg(c, "dlq-store"); s != "postgres" || !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "BALDUR_POSTGRES_DSN" && e.ValueFrom.SecretKeyRef.Name == "pg"
	}) {
		t.Fatalf("postgres: %v %v", c.Args, c.Env)
	}
	if len(r.monitors) != 1 || r.sts.Spec.Template.Spec.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		t.Fatal("service monitor or hard anti-affinity")
	}
	// TLS from an existing Secret.
	r = render(t, "tls.existingSecret=mine")
	if _, ok := r.secrets["t-baldurd-tls"]; ok || r.sts.Spec.Template.Spec.Volumes[1].Secret.SecretName != "mine" {
		t.Fatal("tls.existingSecret")
	}
	// Plaintext only when chosen; HTTP probes then.
	r = render(t, "tls.enabled=false", "insecurePlaintext=true")
	c = r.sts.Spec.Template.Spec.Containers[0]
	if _, ok := arg(c, "insecure-plaintext"); !ok || c.ReadinessProbe.HTTPGet.Scheme != corev1.URISchemeHTTP {
		t.Fatal("plaintext")
	}
}

// pod is one rendered pod run as a process: the chart's args and env with
// the pod's DNS names mapped to loopback addresses.
type pod struct {
	name, ip string
	cmd      *exec.Cmd
	log      *bytes.Buffer
}

// TestChartStartsARealCluster takes the container args the chart renders,
// maps each pod's DNS name and listen address to a loopback address of its
// own (127.0.0.5x), and runs three baldurd processes with exactly those
// arguments: a leader, a write, a failover; then a fourth pod with the same
// arguments joins and is promoted.
func TestChartStartsARealCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts baldurd processes")
	}
	r := render(t, "tls.enabled=false", "insecurePlaintext=true", "extraArgs[0]=--max-breakers=1")
	c := r.sts.Spec.Template.Spec.Containers[0]
	dir := t.TempDir()
	bin := filepath.Join(dir, "baldurd")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/baldurd").CombinedOutput(); err != nil {
		t.Fatalf("build baldurd: %v\n%s", err, out)
	}
	audit := r.secrets["t-baldurd-audit"]
	if err := os.WriteFile(filepath.Join(dir, "audit.key"), audit.Data["audit.key"], 0o600); err != nil {
		t.Fatal(err)
	}
	ipOf := func(i int) string { return fmt.Sprintf("127.0.0.%d", 51+i) }
	start := func(i int) *pod {
		p := &pod{name: fmt.Sprintf("t-baldurd-%d", i), ip: ipOf(i), log: &bytes.Buffer{}}
		var args []string
		for _, a := range c.Args {
			for j := range 5 {
				a = strings.ReplaceAll(a, fmt.Sprintf("t-baldurd-%d.t-baldurd-headless.prod.svc.cluster.local", j), ipOf(j))
			}
			a = strings.ReplaceAll(a, "$(POD_NAME).t-baldurd-headless.prod.svc.cluster.local", p.ip)
			a = strings.ReplaceAll(a, "$(POD_NAME)", p.name)
			a = strings.ReplaceAll(a, "$(POD_IP)", p.ip)
			a = strings.ReplaceAll(a, "0.0.0.0:", p.ip+":")
			a = strings.ReplaceAll(a, "=/data", "="+filepath.Join(dir, p.name))
			a = strings.ReplaceAll(a, "/etc/baldurd/audit/audit.key", filepath.Join(dir, "audit.key"))
			args = append(args, a)
		}
		p.cmd = exec.Command(bin, args...)
		p.cmd.Env = append(os.Environ(), "POD_NAME="+p.name, "POD_IP="+p.ip)
		p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if p.cmd.ProcessState == nil {
				_ = p.cmd.Process.Kill()
				_ = p.cmd.Wait()
			}
			if t.Failed() {
				t.Logf("%s:\n%s", p.name, p.log.String())
			}
		})
		return p
	}
	pods := []*pod{start(0), start(1), start(2)}
	leader := waitLeader(t, pods, "")
	write(t, pods, "LEVEL_1")
	// Failover: the leader dies; another is elected and takes writes.
	for _, p := range pods {
		if p.name == leader {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	}
	next := waitLeader(t, pods, leader)
	write(t, pods, "LEVEL_2")
	t.Logf("leader %s killed, %s elected", leader, next)
	// The dashboard's and the alert rules' metrics, on these real processes.
	exercise(t, pods)
	checkMetrics(t, pods)
	// The killed pod restarts with its data; a fourth joins and is promoted.
	for i, p := range pods {
		if p.name == leader {
			pods[i] = start(i)
		}
	}
	pods = append(pods, start(3))
	deadline := time.Now().Add(30 * time.Second)
	for {
		var cl cluster
		if get(pods, "/v1/cluster", &cl) == nil {
			voters := 0
			for _, m := range cl.Members {
				if m.Suffrage == "VOTER" {
					voters++
				}
			}
			if voters == 4 && slices.ContainsFunc(cl.Members, func(m member) bool { return m.ID == "t-baldurd-3" && m.Suffrage == "VOTER" }) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fourth pod was not promoted: %+v", cl)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type member struct {
	ID       string `json:"id"`
	Suffrage string `json:"suffrage"`
	State    string `json:"state"`
}

type cluster struct {
	LeaderID string   `json:"leader_id"`
	Members  []member `json:"members"`
}

// get reads a REST path from the first pod that answers.
func get(pods []*pod, path string, v any) error {
	var last error
	for _, p := range pods {
		if p.cmd.ProcessState != nil {
			continue
		}
		resp, err := http.Get("http://" + p.ip + ":7401" + path)
		if err != nil {
			last = err
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			last = fmt.Errorf("%s: %d %s", path, resp.StatusCode, body)
			continue
		}
		return json.Unmarshal(body, v)
	}
	return last
}

func waitLeader(t *testing.T, pods []*pod, not string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var cl cluster
		if err := get(pods, "/v1/cluster", &cl); err == nil && cl.LeaderID != "" && cl.LeaderID != not {
			return cl.LeaderID
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leader (other than %q)", not)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// write triggers an emergency level through a live pod, retried while the
// cluster settles.
func write(t *testing.T, pods []*pod, level string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, p := range pods {
			if p.cmd.ProcessState != nil {
				continue
			}
			resp, err := http.Post("http://"+p.ip+":7401/v1/emergency:trigger", "application/json",
				strings.NewReader(`{"level":"`+level+`","reason":"chart test"}`))
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("write: %d %s", resp.StatusCode, body)
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no pod took the write")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
