# services.pbak: pbak's config file and timers on NixOS (docs/systemd.md).
#
#   imports = [ /path/to/pbak/nix/module.nix ];
#   services.pbak = {
#     enable = true;
#     repository = {
#       url = "s3:https://s3.eu-central-003.backblazeb2.com/fleet-backups/pbak";
#       passwordFile = "/etc/pbak/password";   # a string, not a Nix path: never copied to the store
#       envFile = "/etc/pbak/b2.env";
#     };
#     retention = { timezone = "Europe/Berlin"; policy = [ { name = "all"; keep = { daily = 30; }; } ]; };
#     profiles.hetzner = {
#       sources = [ "/" "/home" "/etc" "/var/lib/postgresql" "/var/lib/redis" ];
#       prune = { every = "20h"; };
#       check = { read_data_subset = "25G"; };
#     };
#   };
#
# The settings are written to /etc/pbak/pbak.toml with `pkgs.formats.toml`; `retention`,
# `alerts` and each profile take the keys of the TOML tables as they are (docs/config.md),
# `repository` takes NixOS-style names. The units are those of `pbak systemd PROFILE`: the
# nightly `pbak run`, the weekly check (profiles with `check`), the monthly cost estimate,
# and local snapshots (profiles with `local_snapshots.schedule`), with the password file and
# the env file handed over as systemd credentials.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:

let
  inherit (lib)
    mkEnableOption
    mkIf
    mkOption
    types
    ;
  cfg = config.services.pbak;
  settingsFormat = pkgs.formats.toml { };
  configPath = "/etc/pbak/pbak.toml";

  # TOML has no null: an option left at null is a key left out.
  clean =
    value:
    if builtins.isAttrs value then
      lib.mapAttrs (_: clean) (lib.filterAttrs (n: v: v != null && n != "_module") value)
    else if builtins.isList value then
      map clean value
    else
      value;

  repo = cfg.repository;
  settings = clean {
    repository = {
      inherit (repo) url;
      password_file = repo.passwordFile;
      password_command = repo.passwordCommand;
      env_file = repo.envFile;
      inherit (repo) connections timeout;
      limit_upload = repo.limitUpload;
      limit_download = repo.limitDownload;
    };
    inherit (cfg) retention alerts;
    profile = cfg.profiles;
  };
  configFile = settingsFormat.generate "pbak.toml" settings;

  pbak = lib.getExe cfg.package;
  exec = args: utils.escapeSystemdExecArgs ([ pbak "--config" configPath ] ++ args);

  # The secrets' files reach the service as credentials: systemd reads them as root and
  # pbak gets only their paths in the private credentials directory (%d).
  credentials =
    lib.optional (repo.passwordFile != null) "password:${repo.passwordFile}"
    ++ lib.optional (repo.envFile != null) "env:${repo.envFile}";
  environment =
    [ "PBAK_CACHE_DIR=/var/cache/pbak" ]
    ++ lib.optional (repo.passwordFile != null) "PBAK_PASSWORD_FILE=%d/password"
    ++ lib.optional (repo.envFile != null) "PBAK_ENV_FILE=%d/env";

  service =
    p:
    {
      description,
      args,
      network ? true,
      nice ? p.schedule.nice,
    }:
    {
      inherit description;
      after = lib.optional network "network-online.target";
      wants = lib.optional network "network-online.target";
      # Hooks and the password command find their programs here.
      path = cfg.extraPackages;
      # A rebuild must not start a backup.
      restartIfChanged = false;
      serviceConfig = {
        Type = "oneshot";
        ExecStart = exec args;
        Nice = nice;
        IOSchedulingClass = "idle";
        LoadCredential = credentials;
        Environment = environment;
        StateDirectory = "pbak";
        StateDirectoryMode = "0700";
        CacheDirectory = "pbak";
        CacheDirectoryMode = "0700";
        # Modest: a backup reads every file and writes its local snapshots inside each
        # subvolume (/etc too), so no ProtectSystem= or ProtectHome=.
        PrivateTmp = true;
        NoNewPrivileges = true;
        ProtectKernelModules = true;
        RestrictRealtime = true;
        LockPersonality = true;
      }
      // lib.optionalAttrs (p.schedule.cpu_quota != null) { CPUQuota = p.schedule.cpu_quota; };
    };

  timer = description: onCalendar: delay: {
    inherit description;
    wantedBy = [ "timers.target" ];
    timerConfig = {
      OnCalendar = onCalendar;
      # A run missed while the machine was off or asleep starts at boot.
      Persistent = true;
    }
    // lib.optionalAttrs (delay != null) { RandomizedDelaySec = delay; };
  };

  # name -> { services; timers; } of one profile, as `pbak systemd` writes them.
  unitsOf =
    name: p:
    let
      s = p.schedule;
      check = lib.optionalAttrs (p.check != null) {
        "-check" = {
          service = service p {
            description = "pbak check of the repository (profile ${name})";
            args = [
              "--profile"
              name
              "check"
            ]
            ++ lib.optionals (p.check.read_data_subset != null) [
              "--read-data-subset"
              p.check.read_data_subset
            ];
            nice = 19;
          };
          timer = timer "pbak weekly check (profile ${name})" s.check_on_calendar s.randomized_delay;
        };
      };
      snapshot = lib.optionalAttrs (p.local_snapshots.schedule != null) {
        "-snapshot" = {
          service = service p {
            description = "pbak local Btrfs snapshots (profile ${name})";
            args = [
              "--profile"
              name
              "btrfs"
              "snapshot"
            ]
            ++ p.sources;
            network = false;
          };
          timer = timer "pbak local Btrfs snapshots (profile ${name})" p.local_snapshots.schedule null;
        };
      };
      all = {
        "" = {
          service = service p {
            description = "pbak nightly run of profile ${name}";
            args = [
              "run"
              name
            ];
          };
          timer = timer "pbak nightly run of profile ${name}" s.on_calendar s.randomized_delay;
        };
        "-cost" = {
          service = service p {
            description = "pbak cost estimate of the repository (profile ${name})";
            args = [
              "--profile"
              name
              "cost"
              "--warn"
              (toString cfg.alerts.cost_warn)
              "--critical"
              (toString cfg.alerts.cost_critical)
            ];
            nice = 19;
          };
          timer = timer "pbak monthly cost estimate (profile ${name})" s.cost_on_calendar s.randomized_delay;
        };
      }
      // check
      // snapshot;
    in
    lib.mapAttrs' (suffix: u: lib.nameValuePair "pbak-${name}${suffix}" u) all;

  units = lib.foldl' (acc: u: acc // u) { } (lib.mapAttrsToList unitsOf cfg.profiles);

  nullOr = t: mkOption {
    type = types.nullOr t;
    default = null;
  };

  scheduleModule = {
    options = {
      on_calendar = mkOption {
        type = types.str;
        default = "*-*-* 02:00:00";
        description = "OnCalendar= of the nightly run.";
      };
      randomized_delay = mkOption {
        type = types.str;
        default = "30min";
      };
      cpu_quota = nullOr types.str // {
        description = "CPUQuota=, e.g. 50%.";
      };
      nice = mkOption {
        type = types.ints.between (-20) 19;
        default = 10;
      };
      check_on_calendar = mkOption {
        type = types.str;
        default = "Sun *-*-* 04:00:00";
      };
      cost_on_calendar = mkOption {
        type = types.str;
        default = "*-*-01 06:00:00";
      };
    };
  };

  profileModule =
    { name, ... }:
    {
      # Every other key of a [profile.NAME] table (exclude, tags, hooks, retry, …) as it is.
      freeformType = settingsFormat.type;
      options = {
        host = nullOr types.str // {
          description = "Host name recorded in snapshots (default: the machine's).";
        };
        sources = mkOption {
          type = types.nonEmptyListOf types.str;
          description = "Btrfs subvolumes (or plain paths with snapshot = false) of profile ${name}.";
        };
        snapshot = mkOption {
          type = types.bool;
          default = true;
        };
        forget = mkOption {
          type = types.bool;
          default = true;
        };
        prune = nullOr (
          types.submodule {
            freeformType = settingsFormat.type;
            options.every = mkOption {
              type = types.str;
              default = "7d";
            };
          }
        );
        check = nullOr (
          types.submodule {
            freeformType = settingsFormat.type;
            options = {
              every = mkOption {
                type = types.str;
                default = "7d";
              };
              read_data_subset = nullOr types.str;
            };
          }
        );
        schedule = mkOption {
          type = types.submodule scheduleModule;
          default = { };
        };
        local_snapshots = mkOption {
          default = { };
          type = types.submodule {
            freeformType = settingsFormat.type;
            options.schedule = nullOr types.str // {
              description = "OnCalendar= of `pbak btrfs snapshot` (e.g. hourly).";
            };
          };
        };
      };
    };
in
{
  options.services.pbak = {
    enable = mkEnableOption "pbak backups on timers";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./package.nix { }";
      description = "The pbak package.";
    };

    extraPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
      example = lib.literalExpression "[ pkgs._1password-cli pkgs.util-linux pkgs.postgresql ]";
      description = "Packages on the services' PATH: what the hooks and passwordCommand run.";
    };

    repository = {
      url = mkOption {
        type = types.str;
        description = "As -r/--repo: a path, s3:https://HOST/BUCKET[/PREFIX] or b2:BUCKET[/PREFIX].";
      };
      passwordFile = nullOr types.str // {
        description = "Root-only file holding the password; passed to the services as a systemd credential.";
      };
      passwordCommand = nullOr types.str // {
        description = "A command printing the password (e.g. `op read op://…`).";
      };
      envFile = nullOr types.str // {
        description = "KEY=VALUE credentials (AWS_*, B2_*), root only; passed as a systemd credential.";
      };
      connections = nullOr (types.ints.between 1 64);
      limitUpload = nullOr types.ints.positive // {
        description = "KiB/s.";
      };
      limitDownload = nullOr types.ints.positive;
      timeout = nullOr types.ints.positive // {
        description = "Seconds.";
      };
    };

    retention = mkOption {
      type = types.nullOr settingsFormat.type;
      default = null;
      description = "The [retention] table: timezone and a `policy` list (docs/retention.md).";
    };

    alerts = mkOption {
      default = { };
      description = "The [alerts] table.";
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          cost_warn = mkOption {
            type = types.number;
            default = 8.0;
          };
          cost_critical = mkOption {
            type = types.number;
            default = 10.0;
          };
          max_age = mkOption {
            type = types.str;
            default = "36h";
          };
          check_max_age = mkOption {
            type = types.str;
            default = "8d";
          };
        };
      };
    };

    profiles = mkOption {
      type = types.attrsOf (types.submodule profileModule);
      default = { };
      description = "The [profile.NAME] tables; each gets the timers of `pbak systemd NAME`.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion =
          lib.length (
            lib.filter (x: x != null) [
              repo.passwordFile
              repo.passwordCommand
            ]
          ) <= 1;
        message = "services.pbak.repository: give only one of passwordFile and passwordCommand.";
      }
    ]
    ++ lib.concatLists (
      lib.mapAttrsToList (name: p: [
        {
          assertion = builtins.match "[A-Za-z0-9_-]{1,64}" name != null;
          message = "services.pbak.profiles.${name}: a profile name has 1 to 64 letters, digits, - and _.";
        }
        {
          assertion = p.forget -> cfg.retention != null;
          message = "services.pbak.profiles.${name}: forget is on but services.pbak.retention is null: set it, or forget = false.";
        }
      ]) cfg.profiles
    );

    environment.systemPackages = [ cfg.package ];
    environment.etc."pbak/pbak.toml".source = configFile;

    systemd.services = lib.mapAttrs (_: u: u.service) units;
    systemd.timers = lib.mapAttrs (_: u: u.timer) units;
  };
}
