package cli

import (
	"cmp"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"upkeep.dev/upkeep/internal/envfile"
)

// envAnnotation names, on a flag, the UPKEEP_* variable that sets it when the flag is not given.
const envAnnotation = "upkeep_env"

// envFlag binds flag name of fs to the variable env. The flag's default stays the static one,
// so that --help never shows a value taken from the environment (a token, say).
func envFlag(fs *pflag.FlagSet, name, env string) {
	if err := fs.SetAnnotation(name, envAnnotation, []string{env}); err != nil {
		panic(err) // a programming error: no such flag
	}
}

// applyEnv sets every flag of cmd that was not given on the command line from its variable: the
// environment first, then the configuration file (--config or UPKEEP_CONFIG, for commands that
// take one), and returns the file's values for settings that are not flags (secrets).
func applyEnv(cmd *cobra.Command) (map[string]string, error) {
	file := map[string]string{}
	if f := cmd.Flags().Lookup("config"); f != nil {
		if path := cmp.Or(f.Value.String(), os.Getenv("UPKEEP_CONFIG")); path != "" {
			var err error
			if file, err = envfile.Read(path, true); err != nil {
				return nil, err
			}
		}
	}
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		names := f.Annotations[envAnnotation]
		if f.Changed || len(names) == 0 || err != nil {
			return
		}
		if v, ok := envfile.Lookup(file, names[0]); ok && v != "" {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", names[0], v, e)
			}
		}
	})
	return file, err
}
