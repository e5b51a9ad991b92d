{{/* The job's name: the release's, cut so the operator's pod names (<name>-worker-NN) stay legal. */}}
{{- define "odeon-train.fullname" -}}
{{- .Release.Name | trunc 45 | trimSuffix "-" -}}
{{- end -}}

{{- define "odeon-train.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "odeon-train.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Processes per pod: one per GPU, else cpuProcessesPerPod. */}}
{{- define "odeon-train.processesPerPod" -}}
{{- if gt (int .Values.gpusPerPod) 0 }}{{ .Values.gpusPerPod }}{{ else }}{{ .Values.cpuProcessesPerPod }}{{ end -}}
{{- end -}}

{{- define "odeon-train.configFile" -}}/etc/odeon/config.json{{- end -}}

{{/* The device settings the pod shape decides, as `--set` values (a JSON list), for train and predict alike. */}}
{{- define "odeon-train.deviceSets" -}}
{{- $processes := include "odeon-train.processesPerPod" . | int -}}
{{- $nodes := ternary 1 (add .Values.workers 1) (eq (include "odeon-train.kind" .) "Job") -}}
{{- $world := mul $nodes $processes -}}
{{- $sets := list (printf "device_setup.num_nodes=%d" (int $nodes)) -}}
{{- if gt (int .Values.gpusPerPod) 0 -}}
{{- $sets = concat $sets (list "device_setup.accelerator=gpu" (printf "device_setup.device=%d" (int .Values.gpusPerPod))) -}}
{{- else -}}
{{- $sets = concat $sets (list "device_setup.accelerator=cpu" (printf "device_setup.num_processes=%d" $processes)) -}}
{{- end -}}
{{- if gt (int $world) 1 }}{{ $sets = append $sets "device_setup.strategy=ddp" }}{{ end -}}
{{- $sets = append $sets (printf "device_setup.stop_grace_period=%v" .Values.stopGracePeriodSeconds) -}}
{{- toJson $sets -}}
{{- end -}}

{{/* The kind of resource the pods run in: a PyTorchJob, or (predict.kind job) a plain batch/v1 Job. */}}
{{- define "odeon-train.kind" -}}
{{- if and (eq .Values.command "predict") (eq .Values.predict.kind "job") }}Job{{ else }}PyTorchJob{{ end -}}
{{- end -}}

{{- define "odeon-train.predictFile" -}}/etc/odeon/predict.json{{- end -}}

{{/* The command's arguments: what the pod shape and the values decide, then the user's overrides. */}}
{{- define "odeon-train.args" -}}
{{- $sets := include "odeon-train.deviceSets" . | fromJsonArray -}}
{{- if eq .Values.command "predict" -}}
- predict
- -c
- {{ include "odeon-train.predictFile" . }}
{{- else -}}
{{- if .Values.resume }}{{ $sets = append $sets "train_setup.continue_training=auto" }}{{ end -}}
{{- with .Values.mlflow.experiment }}{{ $sets = append $sets (printf "output_setup.mlflow_experiment=%s" .) }}{{ end -}}
{{- with .Values.mlflow.registeredModelName }}{{ $sets = append $sets (printf "output_setup.registered_model_name=%s" .) }}{{ end -}}
{{- if .Values.mlflow.required }}{{ $sets = append $sets "output_setup.mlflow_required=true" }}{{ end -}}
- train
{{- end }}
{{- range (concat $sets .Values.overrides) }}
- --set
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Environment shared by the training pods and the test pod. */}}
{{- define "odeon-train.env" -}}
- name: ODEON_CONFIG
  value: {{ .Values.configUrl | default (include "odeon-train.configFile" .) | quote }}
- name: ODEON_JOB_NAME
  value: {{ include "odeon-train.fullname" . | quote }}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: IMAGE_TAG
  value: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
- name: HOME
  value: /tmp
- name: TMPDIR
  value: /tmp
{{- with .Values.s3.endpoint }}
- name: AWS_ENDPOINT_URL_S3
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.mlflow.trackingUri }}
- name: MLFLOW_TRACKING_URI
  value: {{ . | quote }}
{{- end }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "odeon-train.envFrom" -}}
{{- with .Values.credentialsSecret }}
envFrom:
  - secretRef:
      name: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* The "restricted" Pod Security Standard, for every container. */}}
{{- define "odeon-train.containerSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.runAsUser }}
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "odeon-train.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.runAsUser }}
  runAsGroup: {{ .Values.runAsUser }}
  fsGroup: {{ .Values.runAsUser }}
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* One replica's pod template (Master or Worker). */}}
{{- define "odeon-train.podTemplate" -}}
metadata:
  labels:
    {{- include "odeon-train.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ toJson .Values.config | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- include "odeon-train.podSecurityContext" . | nindent 2 }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  automountServiceAccountToken: false
  {{- with .Values.serviceAccountName }}
  serviceAccountName: {{ . }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: pytorch  # the operator finds its port and injects its variables by this name
      image: {{ include "odeon-train.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      {{- if eq .Values.launcher "torchrun" }}
      command: ["tini", "--", "torchrun", "-m", "odeon_job"]
      {{- else }}
      command: ["tini", "--", "odeon"]
      {{- end }}
      args:
        {{- include "odeon-train.args" . | nindent 8 }}
      ports:
        - name: pytorchjob-port
          containerPort: 23456
          protocol: TCP
      env:
        {{- include "odeon-train.env" . | nindent 8 }}
      {{- include "odeon-train.envFrom" . | nindent 6 }}
      resources:
        {{- $resources := deepCopy .Values.resources }}
        {{- if gt (int .Values.gpusPerPod) 0 }}
        {{- $limits := merge (dict "nvidia.com/gpu" (int .Values.gpusPerPod)) ($resources.limits | default dict) }}
        {{- $_ := set $resources "limits" $limits }}
        {{- end }}
        {{- toYaml $resources | nindent 8 }}
      {{- include "odeon-train.containerSecurityContext" . | nindent 6 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: dshm
          mountPath: /dev/shm
        {{- if or (not .Values.configUrl) (eq .Values.command "predict") }}
        - name: config
          mountPath: /etc/odeon
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ .Values.tmpSize }}
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ .Values.shmSize }}
    {{- if or (not .Values.configUrl) (eq .Values.command "predict") }}
    - name: config
      configMap:
        name: {{ include "odeon-train.fullname" . }}-config
    {{- end }}
{{- end -}}
