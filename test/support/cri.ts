// SPDX-License-Identifier: Apache-2.0
// A small typed CRI (runtime.v1) client for the end-to-end tests, over @grpc/grpc-js with the
// codecs and service clients generated from proto/cri/api.proto (src/gen/cri/api.ts), plus
// builders for the PodSandboxConfig / ContainerConfig the tests use.
//
// It talks to the private containerd's gRPC socket (Containerd.address) with the CRI plugin on
// (startContainerd({cri: true})).

import {
  credentials, Metadata, type CallOptions, type ClientUnaryCall, type ServiceError,
} from '@grpc/grpc-js';
import {
  ContainerConfig, ContainerFilter, ContainerStatsFilter, ImageServiceClient, NamespaceMode, PodSandboxConfig,
  PodSandboxFilter, RuntimeServiceClient, SecurityProfile_ProfileType,
  type Container, type ContainerStats, type ContainerStatusResponse, type ExecSyncResponse, type Image,
  type PodSandbox, type PodSandboxStatusResponse, type StatusResponse, type VersionResponse,
} from '../../src/gen/cri/api.js';

export * from '../../src/gen/cri/api.js';

/** Default deadline of one CRI call. */
const CALL_TIMEOUT_MS = 30_000;

type UnaryMethod<Req, Res> = (
  req: Req, md: Metadata, opts: Partial<CallOptions>, cb: (err: ServiceError | null, res: Res) => void,
) => ClientUnaryCall;

/** A failed CRI call: the gRPC status code and details, and which method failed. */
export class CriError extends Error {
  constructor(readonly method: string, readonly code: number, readonly details: string) {
    super(`CRI ${method}: ${code} ${details}`);
  }
}

/** `method`: a client's method bound to the client. */
function unary<Req, Res>(name: string, method: UnaryMethod<Req, Res>, req: Req, timeoutMs = CALL_TIMEOUT_MS): Promise<Res> {
  return new Promise((resolve, reject) => {
    method(req, new Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
      if (err) reject(new CriError(name, err.code, err.details ?? err.message));
      else resolve(res);
    });
  });
}

export class CriClient {
  readonly runtime: RuntimeServiceClient;
  readonly images: ImageServiceClient;

  /** `address` is containerd's gRPC socket path (a plain path, or `unix://...`). */
  constructor(address: string) {
    const target = address.startsWith('unix:') ? address : `unix://${address}`;
    const opts = { 'grpc.max_receive_message_length': 16 * 1024 * 1024 };
    this.runtime = new RuntimeServiceClient(target, credentials.createInsecure(), opts);
    this.images = new ImageServiceClient(target, credentials.createInsecure(), opts);
  }

  close(): void {
    this.runtime.close();
    this.images.close();
  }

  version(): Promise<VersionResponse> {
    return unary('Version', this.runtime.version.bind(this.runtime), { version: 'v1' });
  }

  status(): Promise<StatusResponse> {
    return unary('Status', this.runtime.status.bind(this.runtime), { verbose: false });
  }

  async runPodSandbox(config: PodSandboxConfig, runtimeHandler = '', timeoutMs?: number): Promise<string> {
    const r = await unary('RunPodSandbox', this.runtime.runPodSandbox.bind(this.runtime), { config, runtimeHandler }, timeoutMs);
    return r.podSandboxId;
  }

  async stopPodSandbox(podSandboxId: string, timeoutMs?: number): Promise<void> {
    await unary('StopPodSandbox', this.runtime.stopPodSandbox.bind(this.runtime), { podSandboxId }, timeoutMs);
  }

  async removePodSandbox(podSandboxId: string, timeoutMs?: number): Promise<void> {
    await unary('RemovePodSandbox', this.runtime.removePodSandbox.bind(this.runtime), { podSandboxId }, timeoutMs);
  }

  podSandboxStatus(podSandboxId: string): Promise<PodSandboxStatusResponse> {
    return unary('PodSandboxStatus', this.runtime.podSandboxStatus.bind(this.runtime), { podSandboxId, verbose: false });
  }

  async listPodSandbox(filter?: Partial<PodSandboxFilter>): Promise<PodSandbox[]> {
    const r = await unary('ListPodSandbox', this.runtime.listPodSandbox.bind(this.runtime),
      { filter: filter ? PodSandboxFilter.fromPartial(filter) : undefined });
    return r.items;
  }

  async createContainer(podSandboxId: string, config: ContainerConfig, sandboxConfig: PodSandboxConfig, timeoutMs?: number): Promise<string> {
    const r = await unary('CreateContainer', this.runtime.createContainer.bind(this.runtime),
      { podSandboxId, config, sandboxConfig }, timeoutMs);
    return r.containerId;
  }

  async startContainer(containerId: string, timeoutMs?: number): Promise<void> {
    await unary('StartContainer', this.runtime.startContainer.bind(this.runtime), { containerId }, timeoutMs);
  }

  /** `timeoutSec`: grace period before SIGKILL (CRI semantics). */
  async stopContainer(containerId: string, timeoutSec: number, timeoutMs?: number): Promise<void> {
    await unary('StopContainer', this.runtime.stopContainer.bind(this.runtime),
      { containerId, timeout: BigInt(timeoutSec) }, timeoutMs ?? (timeoutSec * 1000 + CALL_TIMEOUT_MS));
  }

  async removeContainer(containerId: string, timeoutMs?: number): Promise<void> {
    await unary('RemoveContainer', this.runtime.removeContainer.bind(this.runtime), { containerId }, timeoutMs);
  }

  async listContainers(filter?: Partial<ContainerFilter>): Promise<Container[]> {
    const r = await unary('ListContainers', this.runtime.listContainers.bind(this.runtime),
      { filter: filter ? ContainerFilter.fromPartial(filter) : undefined });
    return r.containers;
  }

  containerStatus(containerId: string): Promise<ContainerStatusResponse> {
    return unary('ContainerStatus', this.runtime.containerStatus.bind(this.runtime), { containerId, verbose: false });
  }

  /** `timeoutSec` 0 = no timeout (CRI semantics); the call's own deadline is longer. */
  execSync(containerId: string, cmd: string[], timeoutSec = 0): Promise<ExecSyncResponse> {
    return unary('ExecSync', this.runtime.execSync.bind(this.runtime),
      { containerId, cmd, timeout: BigInt(timeoutSec) }, timeoutSec * 1000 + CALL_TIMEOUT_MS);
  }

  async containerStats(containerId: string): Promise<ContainerStats | undefined> {
    const r = await unary('ContainerStats', this.runtime.containerStats.bind(this.runtime), { containerId });
    return r.stats;
  }

  async listContainerStats(filter?: Partial<ContainerStatsFilter>): Promise<ContainerStats[]> {
    const r = await unary('ListContainerStats', this.runtime.listContainerStats.bind(this.runtime),
      { filter: filter ? ContainerStatsFilter.fromPartial(filter) : undefined });
    return r.stats;
  }

  /** The image as the CRI plugin knows it, or undefined (ImageStatus answers an empty image). */
  async imageStatus(ref: string): Promise<Image | undefined> {
    const r = await unary('ImageStatus', this.images.imageStatus.bind(this.images),
      { image: { image: ref, annotations: {} }, verbose: false });
    return r.image && r.image.id ? r.image : undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Config builders

export interface PodOptions {
  name: string;
  /** Kubernetes namespace of the pod (metadata only). */
  namespace?: string;
  uid: string;
  /** Absolute dir where the CRI plugin writes the containers' logs. */
  logDirectory: string;
  /** Host network namespace (NamespaceOption network = NODE): no CNI involved. Default true. */
  hostNetwork?: boolean;
  /** cgroupfs parent of the pod's containers, e.g. "/crit-abc" (cgroup driver cgroupfs). */
  cgroupParent?: string;
  hostname?: string;
  labels?: Record<string, string>;
}

export function podSandboxConfig(o: PodOptions): PodSandboxConfig {
  const hostNetwork = o.hostNetwork ?? true;
  return PodSandboxConfig.fromPartial({
    metadata: { name: o.name, uid: o.uid, namespace: o.namespace ?? 'default', attempt: 0 },
    hostname: hostNetwork ? '' : (o.hostname ?? o.name),
    logDirectory: o.logDirectory,
    labels: o.labels ?? {},
    annotations: {},
    linux: {
      cgroupParent: o.cgroupParent ?? '',
      securityContext: {
        namespaceOptions: {
          network: hostNetwork ? NamespaceMode.NODE : NamespaceMode.POD,
          pid: NamespaceMode.CONTAINER,
          ipc: NamespaceMode.POD,
        },
        seccomp: { profileType: SecurityProfile_ProfileType.Unconfined },
        apparmor: { profileType: SecurityProfile_ProfileType.Unconfined },
      },
    },
  });
}

export interface ContainerOptions {
  name: string;
  image: string;
  command: string[];
  args?: string[];
  /** Relative to the pod's log directory. Default `<name>.log`. */
  logPath?: string;
  env?: Record<string, string>;
  /** memory.limit_in_bytes of the container (0/undefined: none). */
  memoryLimitBytes?: number;
  labels?: Record<string, string>;
  /** Mirror of the pod's host-network setting (kubelet copies it into each container's context). Default true. */
  hostNetwork?: boolean;
}

export function containerConfig(o: ContainerOptions): ContainerConfig {
  return ContainerConfig.fromPartial({
    metadata: { name: o.name, attempt: 0 },
    image: { image: o.image, annotations: {} },
    command: o.command,
    args: o.args ?? [],
    workingDir: '/',
    envs: Object.entries(o.env ?? {}).map(([key, value]) => ({ key, value })),
    labels: o.labels ?? {},
    annotations: {},
    logPath: o.logPath ?? `${o.name}.log`,
    linux: {
      resources: o.memoryLimitBytes ? { memoryLimitInBytes: BigInt(o.memoryLimitBytes) } : undefined,
      securityContext: {
        namespaceOptions: {
          network: (o.hostNetwork ?? true) ? NamespaceMode.NODE : NamespaceMode.POD,
          pid: NamespaceMode.CONTAINER,
          ipc: NamespaceMode.POD,
        },
        seccomp: { profileType: SecurityProfile_ProfileType.Unconfined },
        apparmor: { profileType: SecurityProfile_ProfileType.Unconfined },
      },
    },
  });
}

// ---------------------------------------------------------------------------------------------
// containerd's CRI runtime configuration

export interface CriRuntimeHandler {
  /** The CRI runtime handler's name (RunPodSandbox's runtimeHandler; `runc` is the default one). */
  name: string;
  /** runtime_path: the shim binary. Without, containerd finds containerd-shim-runc-v2 on its PATH. */
  runtimePath?: string;
  /** The runc option ShimCgroup: the cgroup the shim daemon moves itself into. */
  shimCgroup?: string;
}

export interface CriRuntimeOptions {
  /** The runtime handlers, each runtime_type io.containerd.runc.v2 with the cgroupfs driver. Default: `runc`. */
  handlers?: CriRuntimeHandler[];
  /** The CNI plugins' directory (the [cni] bin_dir). */
  cniBinDir?: string;
  /** The CNI network configuration directory (the [cni] conf_dir). */
  cniConfDir?: string;
}

/**
 * The CRI plugin's runtime tables for startContainerd's `extraConfig`, in containerd 1.x names
 * (startContainerd moves them to the 2.x plugins for a 2.x daemon).
 */
export function criRuntimeConfig(o: CriRuntimeOptions = {}): string {
  const q = JSON.stringify;
  const lines: string[] = [];
  for (const h of o.handlers ?? [{ name: 'runc' }]) {
    lines.push(
      `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.${h.name}]`,
      '  runtime_type = "io.containerd.runc.v2"',
      ...(h.runtimePath !== undefined ? [`  runtime_path = ${q(h.runtimePath)}`] : []),
      `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.${h.name}.options]`,
      '  SystemdCgroup = false',
      ...(h.shimCgroup !== undefined ? [`  ShimCgroup = ${q(h.shimCgroup)}`] : []),
    );
  }
  if (o.cniBinDir !== undefined || o.cniConfDir !== undefined) {
    lines.push(
      '[plugins."io.containerd.grpc.v1.cri".cni]',
      ...(o.cniBinDir !== undefined ? [`  bin_dir = ${q(o.cniBinDir)}`] : []),
      ...(o.cniConfDir !== undefined ? [`  conf_dir = ${q(o.cniConfDir)}`] : []),
    );
  }
  return lines.join('\n');
}
